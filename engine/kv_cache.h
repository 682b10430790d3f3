// Key/value storage for the decoder, addressed by slot: each running sequence
// (or beam) owns one slot of `max_len` positions in every layer. Internal (ATen).
// The scheduler of [C] hands out slots; beam search copies them.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace blip2::engine {

class KvCache {
 public:
  // Allocates [slots, heads, max_len, head_dim] keys and values per layer.
  KvCache(int64_t layers, int64_t slots, int64_t max_len, int64_t heads, int64_t head_dim, at::ScalarType dtype,
          at::Device device);

  at::Tensor& keys(int64_t layer) { return keys_[layer]; }
  at::Tensor& values(int64_t layer) { return values_[layer]; }
  int64_t num_slots() const { return num_slots_; }
  int64_t max_len() const { return max_len_; }

  // slot[i] <- slot[sources[i]] for i in `targets`, all layers at once (reads
  // before writes, so permutations are safe). Used to reorder beams.
  void Gather(const std::vector<int64_t>& targets, const std::vector<int64_t>& sources);

 private:
  int64_t num_slots_;
  int64_t max_len_;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

}  // namespace blip2::engine
