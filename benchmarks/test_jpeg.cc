#include "benchmarks/test_jpeg.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cmath>
#include <vector>

namespace blip2::bench {

std::string MakeTestJpeg(int width, int height, int seed) {
  cv::Mat img(height, width, CV_8UC3);
  cv::RNG rng(static_cast<uint64_t>(seed));
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const double s = std::sin(x * 0.05) * std::cos(y * 0.03);
      img.at<cv::Vec3b>(y, x) = cv::Vec3b(cv::saturate_cast<uchar>(128 + 100 * s + rng.gaussian(8)),
                                          cv::saturate_cast<uchar>(x * 255 / width + rng.gaussian(8)),
                                          cv::saturate_cast<uchar>(y * 255 / height + rng.gaussian(8)));
    }
  }
  std::vector<uchar> buf;
  cv::imencode(".jpg", img, buf, {cv::IMWRITE_JPEG_QUALITY, 90});
  return std::string(buf.begin(), buf.end());
}

}  // namespace blip2::bench
