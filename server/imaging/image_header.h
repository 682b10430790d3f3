// Reads an encoded image's format and pixel size from its header alone, so that
// oversized or empty images are refused before a decoder allocates anything.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace blip2::server {

enum class ImageFormat { kJpeg, kPng, kWebp, kBmp, kTiff };

const char* ImageFormatName(ImageFormat format);

struct ImageHeader {
  ImageFormat format = ImageFormat::kJpeg;
  int64_t width = 0;
  int64_t height = 0;
};

// INVALID_ARGUMENT for empty input, an unknown or unsupported format, or a
// header cut short.
absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view bytes);

// True when a JPEG's marker structure reaches the end-of-image marker, i.e. the
// file was not cut short (libjpeg itself only warns and pads with grey).
bool JpegReachesEndOfImage(std::string_view bytes);

}  // namespace blip2::server
