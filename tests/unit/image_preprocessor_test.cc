// The resize and normalisation arithmetic on synthetic images (the fixtures'
// bit-exactness is checked by the parity tests).
#include "engine/model/image_preprocessor.h"

#include <random>

#include "tests/catch.h"

namespace blip2::engine {
namespace {

RgbImage Uniform(int64_t w, int64_t h, uint8_t value) {
  return RgbImage{w, h, std::vector<uint8_t>(w * h * 3, value)};
}

RgbImage Noise(int64_t w, int64_t h, unsigned seed) {
  std::mt19937 rng(seed);
  RgbImage img{w, h, std::vector<uint8_t>(w * h * 3)};
  for (auto& p : img.pixels) p = static_cast<uint8_t>(rng() & 0xFF);
  return img;
}

TEST_CASE("resize: a flat image stays flat at any scale") {
  for (auto [w, h] : {std::pair{1, 1}, {37, 23}, {640, 480}, {224, 100}}) {
    const RgbImage out = ResizeBicubicAntialias(Uniform(w, h, 173), 224, 224);
    REQUIRE(out.width == 224);
    REQUIRE(out.height == 224);
    for (uint8_t p : out.pixels) REQUIRE(p == 173);
  }
}

TEST_CASE("resize: same size is the identity, one changed axis touches only that axis") {
  const RgbImage img = Noise(224, 224, 1);
  CHECK(ResizeBicubicAntialias(img, 224, 224).pixels == img.pixels);
  // Only the height changes: each column is filtered on its own, so a column of
  // constant colour stays constant.
  RgbImage striped = Noise(224, 50, 2);
  for (int64_t y = 0; y < 50; ++y)
    for (int c = 0; c < 3; ++c) striped.pixels[(y * 224 + 7) * 3 + c] = 99;
  const RgbImage out = ResizeBicubicAntialias(striped, 224, 224);
  for (int64_t y = 0; y < 224; ++y) CHECK(out.pixels[(y * 224 + 7) * 3] == 99);
}

TEST_CASE("preprocess: output layout and normalisation constants") {
  ImageProcessorConfig config;
  config.height = config.width = 4;
  RgbImage img = Uniform(4, 4, 0);
  for (int64_t p = 0; p < 16; ++p) img.pixels[p * 3 + 0] = 255;  // pure red
  auto values = PreprocessImage(img, config);
  REQUIRE(values.ok());
  REQUIRE(values->size() == 3 * 16);
  // Constants as torch forms them: float32 mean/std times float32(1 / rescale_factor).
  const float inv = float(1.0 / (1.0 / 255.0));
  const float red = (255.0f - 0.48145466f * inv) / (0.26862954f * inv);
  const float green = (0.0f - 0.4578275f * inv) / (0.26130258f * inv);
  CHECK((*values)[0] == red);
  CHECK((*values)[16] == green);
}

TEST_CASE("preprocess: empty images are refused") {
  CHECK(PreprocessImage(RgbImage{}, ImageProcessorConfig{}).status().code() == absl::StatusCode::kInvalidArgument);
  RgbImage bad{2, 2, std::vector<uint8_t>(5)};
  CHECK_FALSE(PreprocessImage(bad, ImageProcessorConfig{}).ok());
}

}  // namespace
}  // namespace blip2::engine
