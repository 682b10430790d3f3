// Turns encoded image bytes (JPEG, PNG, WebP, BMP, TIFF) into 8-bit RGB the way
// transformers' processor sees them through PIL: grey is replicated, alpha is
// dropped (not composited), palettes are looked up, EXIF orientation is ignored.
// Thread-safe; runs on the preprocessing pool, never on the engine thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/image_preprocessor.h"

namespace blip2::server {

struct DecodeLimits {
  // Images whose header claims more pixels are refused before decoding.
  int64_t max_pixels = 50'000'000;
};

// INVALID_ARGUMENT, with a message naming the problem, for empty, unknown,
// truncated, corrupt, zero-sized or oversized images.
absl::StatusOr<engine::RgbImage> DecodeImage(std::string_view bytes, const DecodeLimits& limits);

// Decoded, then preprocessed for the model ([C, H, W] floats). Decoding errors
// start with `label` (a file path or an API field) and a colon.
absl::StatusOr<std::vector<float>> DecodeToPixels(std::string_view bytes, const DecodeLimits& limits,
                                                  const engine::ImageProcessorConfig& config,
                                                  const std::string& label);

}  // namespace blip2::server
