// BlipImageProcessor, exactly as transformers 5.17 computes it (its default
// torchvision backend): uint8 RGB -> antialiased bicubic resize with int16
// fixed-point weights -> (x - 255*mean) / (255*std) in float32. Pure C++: runs
// on any thread, no LibTorch.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"

namespace blip2::engine {

// An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B.
struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> pixels;  // height * width * 3
};

// torchvision's uint8 antialiased bicubic (a = -0.5): the kernel is widened by
// the scale factor when shrinking, weights are normalised and quantised to int16
// with the most fractional bits that keep the largest weight representable; the
// horizontal pass runs first, a pass whose size does not change is skipped, and
// the intermediate image is uint8.
RgbImage ResizeBicubicAntialias(const RgbImage& image, int64_t out_width, int64_t out_height);

// Resize, rescale and normalise as the processor config says. Returns float32
// CHW values, [3, height, width]. INVALID_ARGUMENT for an empty image.
absl::StatusOr<std::vector<float>> PreprocessImage(const RgbImage& image, const ImageProcessorConfig& config);

}  // namespace blip2::engine
