#include "engine/model/image_preprocessor.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace blip2::engine {
namespace {

// Keys' cubic convolution with a = -0.5, the antialiasing filter of PIL and torch.
double CubicFilter(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
  return 0.0;
}

// Fixed-point filter taps for one axis: output index i reads `size[i]` inputs
// starting at `start[i]`, with weights `taps[i * window + k]` scaled by 2^precision.
struct AxisWeights {
  int64_t window = 0;
  int precision = 0;
  std::vector<int64_t> start;
  std::vector<int64_t> size;
  std::vector<int32_t> taps;
};

AxisWeights ComputeAxisWeights(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double support = scale >= 1.0 ? 2.0 * scale : 2.0;
  const double inv_scale = scale >= 1.0 ? 1.0 / scale : 1.0;
  AxisWeights w;
  w.window = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  w.start.resize(out_size);
  w.size.resize(out_size);
  std::vector<double> weights(out_size * w.window, 0.0);
  double max_weight = 0.0;
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = scale * (static_cast<double>(i) + 0.5);
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    int64_t n = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size) - lo;
    n = std::clamp<int64_t>(n, 0, w.window);
    double* row = &weights[i * w.window];
    double total = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      row[j] = CubicFilter((static_cast<double>(j + lo) - center + 0.5) * inv_scale);
      total += row[j];
    }
    if (total != 0.0) {
      for (int64_t j = 0; j < n; ++j) {
        row[j] /= total;
        max_weight = std::max(max_weight, row[j]);
      }
    }
    w.start[i] = lo;
    w.size[i] = n;
  }
  // As many fractional bits as keep the largest weight below 2^15 (int16 taps).
  int precision = 0;
  for (; precision < 22; ++precision) {
    const int next = static_cast<int>(0.5 + max_weight * (1 << (precision + 1)));
    if (next >= (1 << 15)) break;
  }
  w.precision = precision;
  w.taps.resize(weights.size());
  for (size_t k = 0; k < weights.size(); ++k) {
    const double v = weights[k] * (1 << precision);
    w.taps[k] = static_cast<int16_t>(v < 0 ? static_cast<int>(-0.5 + v) : static_cast<int>(0.5 + v));
  }
  return w;
}

inline uint8_t ClipToByte(int64_t accumulated, int precision) {
  const int64_t v = accumulated >> precision;  // arithmetic shift: floor
  return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255));
}

RgbImage ResizeHorizontal(const RgbImage& in, int64_t out_width) {
  const AxisWeights w = ComputeAxisWeights(in.width, out_width);
  RgbImage out{out_width, in.height, std::vector<uint8_t>(out_width * in.height * 3)};
  const int64_t rounding = int64_t{1} << (w.precision - 1);
  for (int64_t y = 0; y < in.height; ++y) {
    const uint8_t* src = &in.pixels[y * in.width * 3];
    uint8_t* dst = &out.pixels[y * out_width * 3];
    for (int64_t x = 0; x < out_width; ++x) {
      const int32_t* taps = &w.taps[x * w.window];
      for (int c = 0; c < 3; ++c) {
        int64_t acc = rounding;
        for (int64_t j = 0; j < w.size[x]; ++j) acc += int64_t{src[(w.start[x] + j) * 3 + c]} * taps[j];
        dst[x * 3 + c] = ClipToByte(acc, w.precision);
      }
    }
  }
  return out;
}

RgbImage ResizeVertical(const RgbImage& in, int64_t out_height) {
  const AxisWeights w = ComputeAxisWeights(in.height, out_height);
  RgbImage out{in.width, out_height, std::vector<uint8_t>(in.width * out_height * 3)};
  const int64_t rounding = int64_t{1} << (w.precision - 1);
  const int64_t row_len = in.width * 3;
  for (int64_t y = 0; y < out_height; ++y) {
    const int32_t* taps = &w.taps[y * w.window];
    uint8_t* dst = &out.pixels[y * row_len];
    for (int64_t k = 0; k < row_len; ++k) {
      int64_t acc = rounding;
      for (int64_t j = 0; j < w.size[y]; ++j) acc += int64_t{in.pixels[(w.start[y] + j) * row_len + k]} * taps[j];
      dst[k] = ClipToByte(acc, w.precision);
    }
  }
  return out;
}

}  // namespace

RgbImage ResizeBicubicAntialias(const RgbImage& image, int64_t out_width, int64_t out_height) {
  const bool horizontal = out_width != image.width;
  const bool vertical = out_height != image.height;
  if (horizontal && vertical) return ResizeVertical(ResizeHorizontal(image, out_width), out_height);
  if (horizontal) return ResizeHorizontal(image, out_width);
  if (vertical) return ResizeVertical(image, out_height);
  return image;
}

absl::StatusOr<std::vector<float>> PreprocessImage(const RgbImage& image, const ImageProcessorConfig& config) {
  if (image.width <= 0 || image.height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("image has no pixels (", image.width, "x", image.height, ")"));
  }
  if (static_cast<int64_t>(image.pixels.size()) != image.width * image.height * 3) {
    return absl::InvalidArgumentError("image buffer size does not match width * height * 3");
  }
  const RgbImage resized = config.do_resize ? ResizeBicubicAntialias(image, config.width, config.height) : image;
  const int64_t plane = resized.width * resized.height;
  // The torchvision backend folds rescaling into normalisation:
  // (x - mean/rescale) / (std/rescale).
  float offset[3] = {0, 0, 0};
  float divisor[3] = {1, 1, 1};
  float multiplier = 1.0f;
  for (int c = 0; c < 3; ++c) {
    if (config.do_normalize) {
      // As torch does it: the constants become float32 tensors first, then are
      // multiplied by 1/rescale_factor in float32.
      const float inv = static_cast<float>(config.do_rescale ? 1.0 / config.rescale_factor : 1.0);
      offset[c] = static_cast<float>(config.image_mean[c]) * inv;
      divisor[c] = static_cast<float>(config.image_std[c]) * inv;
    }
  }
  if (config.do_rescale && !config.do_normalize) multiplier = static_cast<float>(config.rescale_factor);
  std::vector<float> out(3 * plane);
  for (int64_t p = 0; p < plane; ++p) {
    for (int c = 0; c < 3; ++c) {
      const float x = static_cast<float>(resized.pixels[p * 3 + c]);
      out[c * plane + p] = config.do_normalize ? (x - offset[c]) / divisor[c] : x * multiplier;
    }
  }
  return out;
}

}  // namespace blip2::engine
