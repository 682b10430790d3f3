// Paged key/value storage for the decoder. Every layer holds keys and values
// for `num_blocks` blocks of `block_size` token positions, laid out token-major
// ([num_blocks * block_size, heads, head_dim]); a sequence owns a block table
// (the scheduler hands out block ids) and position p lives in block
// table[p / block_size] at offset p % block_size. Internal (ATen).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace blip2::engine {

using BlockTable = std::vector<int32_t>;

class KvCache {
 public:
  KvCache(int64_t layers, int64_t num_blocks, int64_t block_size, int64_t heads, int64_t head_dim,
          at::ScalarType dtype, at::Device device);

  // A cache for one-off generation: `slots` sequences of up to `max_len`
  // tokens, slot s owning consecutive blocks (SlotBlocks(s)).
  static KvCache ForSlots(int64_t layers, int64_t slots, int64_t max_len, int64_t heads, int64_t head_dim,
                          at::ScalarType dtype, at::Device device);
  BlockTable SlotBlocks(int64_t slot) const;

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  // Bytes of one block across all layers, keys and values.
  int64_t bytes_per_block() const;

  // The storage rows of positions start .. start+count-1 of a sequence.
  void AppendRows(const BlockTable& table, int64_t start, int64_t count, std::vector<int64_t>* rows) const;
  // Every layer's storage, [num_blocks * block_size, heads, head_dim].
  at::Tensor& keys(int64_t layer) { return keys_[layer]; }
  at::Tensor& values(int64_t layer) { return values_[layer]; }

  // Stores k, v [n, heads, head_dim] at positions start .. start+n-1.
  void Write(int64_t layer, const BlockTable& table, int64_t start, const at::Tensor& k, const at::Tensor& v);
  // Keys and values of positions 0 .. total-1, each [heads, total, head_dim].
  std::pair<at::Tensor, at::Tensor> Read(int64_t layer, const BlockTable& table, int64_t total) const;
  // dst[i] <- src[i] for whole blocks in every layer (reads before writes).
  void CopyBlocks(const BlockTable& dst, const BlockTable& src);
  // Slot-level copy for one-off generation: slot targets[i] <- slot sources[i].
  void Gather(const std::vector<int64_t>& targets, const std::vector<int64_t>& sources);

 private:
  at::Tensor Positions(const BlockTable& table, int64_t start, int64_t count) const;

  int64_t num_blocks_;
  int64_t block_size_;
  int64_t blocks_per_slot_ = 0;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

}  // namespace blip2::engine
