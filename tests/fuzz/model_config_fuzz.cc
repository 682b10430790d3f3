// A model folder's JSON: config.json into the typed Blip2Config (and its
// default generation settings), generation_config.json and
// preprocessor_config.json. The first byte chooses the file.
#include "engine/model/model_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(blip2::fuzz::Bytes(data + 1, size - 1));
  switch (data[0] % 3) {
    case 0: {
      auto config = blip2::engine::ParseBlip2Config(text, "config.json");
      if (config.ok()) (void)blip2::engine::DefaultGenerationConfig(*config);
      break;
    }
    case 1:
      (void)blip2::engine::ParseGenerationConfig(text, "generation_config.json");
      break;
    default:
      (void)blip2::engine::ParseImageProcessorConfig(text, "preprocessor_config.json");
  }
  return 0;
}
