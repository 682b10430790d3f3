// A synthetic photo-like JPEG for decode benchmarks (smooth gradients plus noise).
#pragma once

#include <string>

namespace blip2::bench {

std::string MakeTestJpeg(int width, int height);

}  // namespace blip2::bench
