// Image bytes as clients send them: header sniffing, the JPEG end check and
// the whole decode to model pixels, for every format OpenCV is given.
#include "engine/model/model_config.h"
#include "server/imaging/image_decoder.h"
#include "server/imaging/image_header.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = blip2::fuzz::Bytes(data, size);
  (void)blip2::server::ReadImageHeader(bytes);
  (void)blip2::server::JpegReachesEndOfImage(bytes);
  blip2::engine::ImageProcessorConfig config;
  config.height = config.width = 32;  // small output: the decoder is what is fuzzed
  // A pixel cap that keeps one input's decode to milliseconds.
  (void)blip2::server::DecodeToPixels(bytes, blip2::server::DecodeLimits{1 << 20}, config, "data");
  return 0;
}
