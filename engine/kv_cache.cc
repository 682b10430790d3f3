#include "engine/kv_cache.h"

namespace blip2::engine {

KvCache::KvCache(int64_t layers, int64_t slots, int64_t max_len, int64_t heads, int64_t head_dim,
                 at::ScalarType dtype, at::Device device)
    : num_slots_(slots), max_len_(max_len) {
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < layers; ++l) {
    keys_.push_back(at::zeros({slots, heads, max_len, head_dim}, options));
    values_.push_back(at::zeros({slots, heads, max_len, head_dim}, options));
  }
}

void KvCache::Gather(const std::vector<int64_t>& targets, const std::vector<int64_t>& sources) {
  if (targets.empty()) return;
  const auto device = keys_[0].device();
  const at::Tensor dst = at::tensor(targets, at::kLong).to(device);
  const at::Tensor src = at::tensor(sources, at::kLong).to(device);
  for (size_t l = 0; l < keys_.size(); ++l) {
    keys_[l].index_copy_(0, dst, keys_[l].index_select(0, src));
    values_[l].index_copy_(0, dst, values_[l].index_select(0, src));
  }
}

}  // namespace blip2::engine
