#include "server/imaging/image_decoder.h"

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "server/imaging/image_header.h"

namespace blip2::server {
namespace {

// OpenCV reports decoder failures on stderr as well as through an empty result;
// the caller already gets a status, so keep the log quiet.
void SilenceOpenCvLogging() {
  static const bool once = [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    return true;
  }();
  (void)once;
}

absl::StatusOr<cv::Mat> ToEightBit(const cv::Mat& m, const char* format) {
  if (m.depth() == CV_8U) return m;
  cv::Mat out;
  if (m.depth() == CV_16U) {
    // PIL keeps the high byte of 16-bit samples.
    m.convertTo(out, CV_8U, 1.0 / 256.0);
    return out;
  }
  return absl::InvalidArgumentError(absl::StrCat(format, " image has unsupported sample type (depth ", m.depth(),
                                                 "); expected 8 or 16 bits per sample"));
}

}  // namespace

absl::StatusOr<engine::RgbImage> DecodeImage(std::string_view bytes, const DecodeLimits& limits) {
  absl::StatusOr<ImageHeader> header = ReadImageHeader(bytes);
  if (!header.ok()) return header.status();
  const char* format = ImageFormatName(header->format);
  if (header->width == 0 || header->height == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(format, " image is ", header->width, "x", header->height, ": it has no pixels"));
  }
  // Divided, not multiplied: headers can claim 2^32 x 2^32, which overflows (found by image_fuzz).
  if (header->width > limits.max_pixels / header->height) {
    return absl::InvalidArgumentError(absl::StrCat(format, " image is ", header->width, "x", header->height, " = ",
                                                   // headers hold 32-bit sizes: the product fits 64 unsigned bits
                                                   static_cast<uint64_t>(header->width) * static_cast<uint64_t>(header->height),
                                                   " pixels, over the limit of ", limits.max_pixels));
  }
  if (header->format == ImageFormat::kJpeg && !JpegReachesEndOfImage(bytes)) {
    return absl::InvalidArgumentError("JPEG data is truncated (no end-of-image marker)");
  }
  SilenceOpenCvLogging();
  cv::Mat decoded;
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    // IMREAD_UNCHANGED keeps alpha and grey as stored and ignores EXIF orientation.
    decoded = cv::imdecode(raw, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(format, " image could not be decoded: ", e.what()));
  }
  if (decoded.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(format, " image could not be decoded (truncated or corrupt data)"));
  }
  absl::StatusOr<cv::Mat> eight = ToEightBit(decoded, format);
  if (!eight.ok()) return eight.status();
  cv::Mat rgb;
  switch (eight->channels()) {
    case 1: cv::cvtColor(*eight, rgb, cv::COLOR_GRAY2RGB); break;
    case 2: {  // grey + alpha: replicate grey, drop alpha
      cv::Mat grey;
      cv::extractChannel(*eight, grey, 0);
      cv::cvtColor(grey, rgb, cv::COLOR_GRAY2RGB);
      break;
    }
    case 3: cv::cvtColor(*eight, rgb, cv::COLOR_BGR2RGB); break;
    case 4: cv::cvtColor(*eight, rgb, cv::COLOR_BGRA2RGB); break;  // alpha dropped, not composited
    default:
      return absl::InvalidArgumentError(absl::StrCat(format, " image has ", eight->channels(), " channels"));
  }
  engine::RgbImage image;
  image.width = rgb.cols;
  image.height = rgb.rows;
  image.pixels.resize(static_cast<size_t>(rgb.total()) * 3);
  for (int y = 0; y < rgb.rows; ++y) {
    std::memcpy(&image.pixels[static_cast<size_t>(y) * rgb.cols * 3], rgb.ptr<uint8_t>(y), size_t(rgb.cols) * 3);
  }
  return image;
}

absl::StatusOr<std::vector<float>> DecodeToPixels(std::string_view bytes, const DecodeLimits& limits,
                                                  const engine::ImageProcessorConfig& config,
                                                  const std::string& label) {
  auto rgb = DecodeImage(bytes, limits);
  if (!rgb.ok()) return absl::Status(rgb.status().code(), absl::StrCat(label, ": ", rgb.status().message()));
  return engine::PreprocessImage(*rgb, config);
}

}  // namespace blip2::server
