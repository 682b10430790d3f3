#include "engine/model/kv_cache.h"

namespace blip2::engine {

KvCache::KvCache(int64_t layers, int64_t num_blocks, int64_t block_size, int64_t heads, int64_t head_dim,
                 at::ScalarType dtype, at::Device device)
    : num_blocks_(num_blocks), block_size_(block_size) {
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < layers; ++l) {
    keys_.push_back(at::zeros({num_blocks * block_size, heads, head_dim}, options));
    values_.push_back(at::zeros({num_blocks * block_size, heads, head_dim}, options));
  }
}

KvCache KvCache::ForSlots(int64_t layers, int64_t slots, int64_t max_len, int64_t heads, int64_t head_dim,
                          at::ScalarType dtype, at::Device device) {
  constexpr int64_t kBlockSize = 16;
  const int64_t per_slot = (max_len + kBlockSize - 1) / kBlockSize;
  KvCache cache(layers, slots * per_slot, kBlockSize, heads, head_dim, dtype, device);
  cache.blocks_per_slot_ = per_slot;
  return cache;
}

BlockTable KvCache::SlotBlocks(int64_t slot) const {
  BlockTable table(blocks_per_slot_);
  for (int64_t i = 0; i < blocks_per_slot_; ++i) table[i] = static_cast<int32_t>(slot * blocks_per_slot_ + i);
  return table;
}

int64_t KvCache::bytes_per_block() const {
  if (keys_.empty()) return 0;
  return 2 * static_cast<int64_t>(keys_.size()) * block_size_ * keys_[0].size(1) * keys_[0].size(2) *
         static_cast<int64_t>(keys_[0].element_size());
}

void KvCache::AppendRows(const BlockTable& table, int64_t start, int64_t count, std::vector<int64_t>* rows) const {
  for (int64_t p = start; p < start + count; ++p) {
    rows->push_back(int64_t{table[p / block_size_]} * block_size_ + p % block_size_);
  }
}

at::Tensor KvCache::Positions(const BlockTable& table, int64_t start, int64_t count) const {
  std::vector<int64_t> rows;
  AppendRows(table, start, count, &rows);
  return at::tensor(rows, at::kLong).to(keys_[0].device());
}

void KvCache::Write(int64_t layer, const BlockTable& table, int64_t start, const at::Tensor& k, const at::Tensor& v) {
  const at::Tensor rows = Positions(table, start, k.size(0));
  keys_[layer].index_copy_(0, rows, k);
  values_[layer].index_copy_(0, rows, v);
}

std::pair<at::Tensor, at::Tensor> KvCache::Read(int64_t layer, const BlockTable& table, int64_t total) const {
  const at::Tensor rows = Positions(table, 0, total);
  return {keys_[layer].index_select(0, rows).transpose(0, 1), values_[layer].index_select(0, rows).transpose(0, 1)};
}

void KvCache::CopyBlocks(const BlockTable& dst, const BlockTable& src) {
  if (dst.empty()) return;
  std::vector<int64_t> to, from;
  for (size_t i = 0; i < dst.size(); ++i) {
    for (int64_t o = 0; o < block_size_; ++o) {
      to.push_back(int64_t{dst[i]} * block_size_ + o);
      from.push_back(int64_t{src[i]} * block_size_ + o);
    }
  }
  const at::Tensor t = at::tensor(to, at::kLong).to(keys_[0].device());
  const at::Tensor f = at::tensor(from, at::kLong).to(keys_[0].device());
  for (size_t l = 0; l < keys_.size(); ++l) {
    keys_[l].index_copy_(0, t, keys_[l].index_select(0, f));
    values_[l].index_copy_(0, t, values_[l].index_select(0, f));
  }
}

void KvCache::Gather(const std::vector<int64_t>& targets, const std::vector<int64_t>& sources) {
  BlockTable dst, src;
  for (size_t i = 0; i < targets.size(); ++i) {
    const BlockTable d = SlotBlocks(targets[i]);
    const BlockTable s = SlotBlocks(sources[i]);
    dst.insert(dst.end(), d.begin(), d.end());
    src.insert(src.end(), s.begin(), s.end());
  }
  CopyBlocks(dst, src);
}

}  // namespace blip2::engine
