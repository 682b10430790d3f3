#include "tests/parity/image_files.h"

#include "common/file_util.h"
#include "engine/model/image_preprocessor.h"
#include "server/imaging/image_decoder.h"
#include "tests/catch.h"

namespace blip2::testing {

std::vector<float> DecodeAndPreprocess(const std::string& image_path, const engine::ImageProcessorConfig& config) {
  INFO("image file: " << image_path);
  auto bytes = common::ReadFile(image_path);
  REQUIRE(bytes.ok());
  auto rgb = server::DecodeImage(*bytes, {});
  INFO(rgb.status().ToString());
  REQUIRE(rgb.ok());
  auto values = engine::PreprocessImage(*rgb, config);
  REQUIRE(values.ok());
  return *values;
}

}  // namespace blip2::testing
