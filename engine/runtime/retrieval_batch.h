// Runs ready retrieval requests together: every text of every request in one
// padded Q-Former pass, then each matching request's (image, text) pairs
// through the ITM pass in one batch. Internal (ATen).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model/blip2_model.h"
#include "engine/runtime/image_cache.h"
#include "engine/runtime/retrieval.h"

namespace blip2::engine {

struct RetrievalJob {
  std::vector<std::vector<int64_t>> text_ids;  // [CLS] ... [SEP] per text
  std::vector<bool> truncated;
  CachedImage image;  // undefined tensors for a texts-only request
  bool match = false;
  bool features = false;
};

// One result per job, in order. Call on the engine thread under InferenceMode.
std::vector<RetrievalResult> RunRetrieval(const Blip2Model& model, const std::vector<RetrievalJob>& jobs,
                                          int64_t pad_id);

}  // namespace blip2::engine
