// The ideal a continuous-batching engine is measured against: captions run as
// static batches straight through the image path and the decoder, with no
// scheduler, no sinks and no host work beyond one argmax per step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blip2::bench {

struct StaticRun {
  double seconds = 0;         // model loading excluded
  double vision_seconds = 0;  // of which the image path (encoder, Q-Former, projection)
};

// Captions `images` (preprocessed, [C, H, W] each) in batches of `batch`, each
// exactly `new_tokens` greedy tokens. `device`, `dtype` as EngineOptions takes
// them ("cpu", "float32").
StaticRun RunStaticBatches(const std::string& model_dir, const std::string& device, const std::string& dtype,
                        const std::vector<std::vector<float>>& images, int64_t batch, int64_t new_tokens);

}  // namespace blip2::bench
