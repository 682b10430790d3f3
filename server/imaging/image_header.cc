#include "server/imaging/image_header.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace blip2::server {
namespace {

uint32_t Be16(std::string_view b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 8) | uint8_t(b[at + 1]);
}
uint32_t Be32(std::string_view b, size_t at) { return (Be16(b, at) << 16) | Be16(b, at + 2); }
uint32_t Le16(std::string_view b, size_t at) {
  return uint8_t(b[at]) | (uint32_t(uint8_t(b[at + 1])) << 8);
}
uint32_t Le24(std::string_view b, size_t at) { return Le16(b, at) | (uint32_t(uint8_t(b[at + 2])) << 16); }
uint32_t Le32(std::string_view b, size_t at) { return Le16(b, at) | (Le16(b, at + 2) << 16); }

bool StartsWith(std::string_view b, std::string_view prefix) { return b.substr(0, prefix.size()) == prefix; }

absl::Status Truncated(ImageFormat f) {
  return absl::InvalidArgumentError(absl::StrCat("truncated or corrupt ", ImageFormatName(f), " header"));
}

absl::StatusOr<ImageHeader> ReadPng(std::string_view b) {
  // Signature, then the IHDR chunk: length, "IHDR", width, height (big-endian).
  if (b.size() < 24 || b.substr(12, 4) != "IHDR") return Truncated(ImageFormat::kPng);
  return ImageHeader{ImageFormat::kPng, Be32(b, 16), Be32(b, 20)};
}

absl::StatusOr<ImageHeader> ReadJpeg(std::string_view b) {
  size_t pos = 2;
  while (pos + 4 <= b.size()) {
    if (uint8_t(b[pos]) != 0xFF) return Truncated(ImageFormat::kJpeg);
    const uint8_t marker = uint8_t(b[pos + 1]);
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    const uint32_t length = Be16(b, pos + 2);
    const bool is_sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (is_sof) {
      if (pos + 9 > b.size()) break;
      return ImageHeader{ImageFormat::kJpeg, Be16(b, pos + 7), Be16(b, pos + 5)};
    }
    if (marker == 0xD9 || marker == 0xDA || length < 2) break;  // no frame header before the scan
    pos += 2 + length;
  }
  return Truncated(ImageFormat::kJpeg);
}

absl::StatusOr<ImageHeader> ReadWebp(std::string_view b) {
  if (b.size() < 30) return Truncated(ImageFormat::kWebp);
  const std::string_view chunk = b.substr(12, 4);
  if (chunk == "VP8X") return ImageHeader{ImageFormat::kWebp, Le24(b, 24) + 1, Le24(b, 27) + 1};
  if (chunk == "VP8L") {
    const uint32_t bits = Le32(b, 21);
    return ImageHeader{ImageFormat::kWebp, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1};
  }
  if (chunk == "VP8 ") return ImageHeader{ImageFormat::kWebp, Le16(b, 26) & 0x3FFF, Le16(b, 28) & 0x3FFF};
  return Truncated(ImageFormat::kWebp);
}

absl::StatusOr<ImageHeader> ReadBmp(std::string_view b) {
  if (b.size() < 26) return Truncated(ImageFormat::kBmp);
  const uint32_t dib_size = Le32(b, 14);
  if (dib_size == 12) return ImageHeader{ImageFormat::kBmp, Le16(b, 18), Le16(b, 20)};
  const int32_t width = static_cast<int32_t>(Le32(b, 18));
  const int32_t height = static_cast<int32_t>(Le32(b, 22));  // negative: rows stored top-down
  return ImageHeader{ImageFormat::kBmp, std::abs(int64_t{width}), std::abs(int64_t{height})};
}

absl::StatusOr<ImageHeader> ReadTiff(std::string_view b) {
  const bool little = b[0] == 'I';
  auto u16 = [&](size_t at) { return little ? Le16(b, at) : Be16(b, at); };
  auto u32 = [&](size_t at) { return little ? Le32(b, at) : Be32(b, at); };
  if (b.size() < 8) return Truncated(ImageFormat::kTiff);
  const size_t ifd = u32(4);
  if (ifd + 2 > b.size()) return Truncated(ImageFormat::kTiff);
  const uint32_t entries = u16(ifd);
  int64_t width = -1, height = -1;
  for (uint32_t i = 0; i < entries; ++i) {
    const size_t e = ifd + 2 + 12 * size_t{i};
    if (e + 12 > b.size()) return Truncated(ImageFormat::kTiff);
    const uint32_t tag = u16(e);
    const uint32_t type = u16(e + 2);
    const uint32_t value = type == 3 ? u16(e + 8) : u32(e + 8);  // SHORT or LONG
    if (tag == 256) width = value;
    if (tag == 257) height = value;
  }
  if (width < 0 || height < 0) return Truncated(ImageFormat::kTiff);
  return ImageHeader{ImageFormat::kTiff, width, height};
}

}  // namespace

const char* ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: return "JPEG";
    case ImageFormat::kPng: return "PNG";
    case ImageFormat::kWebp: return "WebP";
    case ImageFormat::kBmp: return "BMP";
    case ImageFormat::kTiff: return "TIFF";
  }
  return "?";
}

absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view b) {
  if (b.empty()) return absl::InvalidArgumentError("image is empty (0 bytes)");
  if (StartsWith(b, "\x89PNG\r\n\x1a\n")) return ReadPng(b);
  if (StartsWith(b, "\xFF\xD8\xFF")) return ReadJpeg(b);
  if (StartsWith(b, "RIFF") && b.size() >= 12 && b.substr(8, 4) == "WEBP") return ReadWebp(b);
  if (StartsWith(b, "BM")) return ReadBmp(b);
  if (StartsWith(b, std::string_view("II*\0", 4)) || StartsWith(b, std::string_view("MM\0*", 4))) return ReadTiff(b);
  if (StartsWith(b, "GIF8")) return absl::InvalidArgumentError("GIF images are not supported (use JPEG, PNG, WebP, BMP or TIFF)");
  return absl::InvalidArgumentError("unrecognised image format (supported: JPEG, PNG, WebP, BMP, TIFF)");
}

bool JpegReachesEndOfImage(std::string_view b) {
  size_t pos = 2;  // after SOI
  while (pos + 1 < b.size()) {
    if (uint8_t(b[pos]) != 0xFF) return false;
    const uint8_t marker = uint8_t(b[pos + 1]);
    if (marker == 0xFF) {
      ++pos;
      continue;
    }
    if (marker == 0xD9) return true;
    if (marker >= 0xD0 && marker <= 0xD7) {  // restart markers carry no length
      pos += 2;
      continue;
    }
    if (pos + 4 > b.size()) return false;
    pos += 2 + Be16(b, pos + 2);
    if (marker != 0xDA) continue;
    // Entropy-coded data: runs until a marker other than a stuffed 0xFF00 or RSTn.
    while (pos + 1 < b.size()) {
      if (uint8_t(b[pos]) == 0xFF) {
        const uint8_t next = uint8_t(b[pos + 1]);
        if (next != 0x00 && !(next >= 0xD0 && next <= 0xD7) && next != 0xFF) break;
      }
      ++pos;
    }
  }
  return false;
}

}  // namespace blip2::server
