#include "engine/runtime/vision_batcher.h"

#include <algorithm>
#include <set>

#include "engine/model/torch_util.h"

namespace blip2::engine {

void VisionBatcher::Add(int64_t id, uint64_t key, std::vector<float> pixels, Clock::time_point submitted) {
  waiting_.push_back({id, key, std::move(pixels), submitted});
}

void VisionBatcher::Remove(int64_t id) {
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), [&](const Waiting& w) { return w.id == id; }),
                 waiting_.end());
}

VisionBatcher::Outcome VisionBatcher::Run(bool force) {
  Outcome outcome;
  if (waiting_.empty()) return outcome;
  // The distinct images not cached yet, oldest request first.
  std::vector<uint64_t> missing;
  std::map<uint64_t, const std::vector<float>*> pixels_of;
  for (const Waiting& w : waiting_) {
    if (cache_.Find(w.key) != nullptr || w.pixels.empty()) continue;
    if (pixels_of.emplace(w.key, &w.pixels).second) missing.push_back(w.key);
  }
  const bool full = static_cast<int64_t>(missing.size()) >= max_batch_;
  const bool waited = Clock::now() - waiting_.front().submitted >= max_delay_;
  std::set<uint64_t> fresh;  // encoded by this Run
  if (!missing.empty() && (full || waited || force)) {
    missing.resize(std::min<size_t>(missing.size(), static_cast<size_t>(max_batch_)));
    std::vector<const std::vector<float>*> batch;
    for (uint64_t key : missing) batch.push_back(pixels_of.at(key));
    try {
      const ImagePathOutput out = model_.image_path->Forward(model_.PixelBatch(batch));
      for (size_t i = 0; i < missing.size(); ++i) {
        const int64_t b = static_cast<int64_t>(i);
        CachedImage image;
        if (out.projected.defined()) {
          image.projected = out.projected[b];
        } else {  // retrieval: what ITC, ITM and Embed read
          image.image_embeds = out.image_embeds[b];
          image.vision_hidden = out.vision.last_hidden_state[b];
          image.qformer = out.qformer[b];
        }
        cache_.Insert(missing[i], std::move(image));
      }
      outcome.encoded = static_cast<int64_t>(missing.size());
      fresh.insert(missing.begin(), missing.end());
    } catch (const std::exception& e) {
      const absl::Status status = StatusFromException(e, "encoding images");
      const std::set<uint64_t> failed(missing.begin(), missing.end());
      for (const Waiting& w : waiting_) {
        if (failed.count(w.key) > 0) outcome.failed.emplace_back(w.id, status);
      }
      for (const auto& [id, status] : outcome.failed) Remove(id);
      return outcome;
    }
  }
  std::deque<Waiting> still;
  for (Waiting& w : waiting_) {
    if (cache_.Find(w.key) != nullptr) {
      outcome.ready.push_back(w.id);
      // The first request of each newly encoded image brought it; the rest hit.
      if (fresh.erase(w.key) == 0) outcome.cache_hit.push_back(w.id);
    } else if (w.pixels.empty()) {
      // A registered image released (and evicted) before this request reached it.
      outcome.failed.emplace_back(w.id, absl::NotFoundError("the image was released before the request started"));
    } else {
      still.push_back(std::move(w));
    }
  }
  waiting_.swap(still);
  return outcome;
}

}  // namespace blip2::engine
