// Turns encoded image bytes (JPEG, PNG, WebP, BMP, TIFF) into 8-bit RGB the way
// transformers' processor sees them through PIL: grey is replicated, alpha is
// dropped (not composited), palettes are looked up, EXIF orientation is ignored.
// Thread-safe; runs on the preprocessing pool, never on the engine thread.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/image_preprocessor.h"

namespace blip2::server {

struct DecodeLimits {
  // Images whose header claims more pixels are refused before decoding.
  int64_t max_pixels = 50'000'000;
};

// INVALID_ARGUMENT, with a message naming the problem, for empty, unknown,
// truncated, corrupt, zero-sized or oversized images.
absl::StatusOr<engine::RgbImage> DecodeImage(std::string_view bytes, const DecodeLimits& limits);

}  // namespace blip2::server
