// A synthetic photo-like JPEG for decode benchmarks (smooth gradients plus noise).
#pragma once

#include <string>

namespace blip2::bench {

// `seed` varies the noise, so different seeds give different images (and cache keys).
std::string MakeTestJpeg(int width, int height, int seed = 1);

}  // namespace blip2::bench
