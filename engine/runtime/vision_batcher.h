// The vision batcher: requests wait here for their image's embeddings. Each
// Run encodes the distinct images not yet cached (the vision encoder and the
// Q-Former once per image, up to max_batch at a time) when a batch is full,
// the oldest request has waited max_queue_delay, or the caller forces it, and
// hands back the requests whose image is now in the cache. Internal (ATen).
// Engine thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/blip2_model.h"
#include "engine/runtime/image_cache.h"

namespace blip2::engine {

class VisionBatcher {
 public:
  using Clock = std::chrono::steady_clock;

  VisionBatcher(const Blip2Model& model, ImageCache& cache, int64_t max_batch, std::chrono::microseconds max_delay)
      : model_(model), cache_(cache), max_batch_(max_batch), max_delay_(max_delay) {}

  // Queues request `id` for image `key`; `pixels` empty when the image was
  // registered (it must then be found in the cache).
  void Add(int64_t id, uint64_t key, std::vector<float> pixels, Clock::time_point submitted);
  void Remove(int64_t id);
  bool empty() const { return waiting_.empty(); }
  int64_t size() const { return static_cast<int64_t>(waiting_.size()); }

  struct Outcome {
    std::vector<int64_t> ready;      // image cached, in arrival order
    std::vector<int64_t> cache_hit;  // those of `ready` that brought no new image
    std::vector<std::pair<int64_t, absl::Status>> failed;
    int64_t encoded = 0;             // images this Run encoded (one batch)
  };
  Outcome Run(bool force);

 private:
  struct Waiting {
    int64_t id;
    uint64_t key;
    std::vector<float> pixels;
    Clock::time_point submitted;
  };

  const Blip2Model& model_;
  ImageCache& cache_;
  int64_t max_batch_;
  std::chrono::microseconds max_delay_;
  std::deque<Waiting> waiting_;
};

}  // namespace blip2::engine
