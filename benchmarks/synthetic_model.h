// Writes a randomly initialised BLIP-2 image path (config files plus a
// safetensors checkpoint) of a released model's shape, so the real loading and
// compute paths can be timed without the real weights.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace blip2::bench {

// The image path of Salesforce/blip2-opt-2.7b: ViT-g 39 x 1408 (16 heads),
// Q-Former 12 x 768 with 32 queries, language projection to 2560. Weights are
// stored as bfloat16 (half the disk of float32); the loader converts them.
absl::Status WriteSyntheticOpt27bImagePath(const std::string& dir);

}  // namespace blip2::bench
