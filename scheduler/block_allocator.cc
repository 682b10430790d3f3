#include "scheduler/block_allocator.h"

#include <cassert>

namespace blip2::scheduler {

BlockAllocator::BlockAllocator(int64_t num_blocks, bool prefix_caching)
    : prefix_caching_(prefix_caching),
      ref_counts_(num_blocks, 0),
      lru_pos_(num_blocks),
      keys_(num_blocks) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<BlockId>(b));
}

std::optional<BlockKey> BlockAllocator::key_of(BlockId block) const { return keys_[block]; }

std::vector<BlockId> BlockAllocator::Allocate(int64_t n) {
  if (n > num_free()) return {};
  std::vector<BlockId> blocks;
  blocks.reserve(n);
  while (static_cast<int64_t>(blocks.size()) < n && !free_.empty()) {
    blocks.push_back(free_.back());
    free_.pop_back();
  }
  while (static_cast<int64_t>(blocks.size()) < n) {  // evict the least recently released cached blocks
    const BlockId b = lru_.front();
    lru_.pop_front();
    Forget(b);
    ++stats_.evictions;
    blocks.push_back(b);
  }
  for (BlockId b : blocks) ref_counts_[b] = 1;
  return blocks;
}

void BlockAllocator::Share(BlockId block) {
  if (ref_counts_[block] == 0) {
    assert(keys_[block].has_value());  // only a cached block can be shared while unheld
    lru_.erase(lru_pos_[block]);
  }
  ++ref_counts_[block];
}

void BlockAllocator::Release(const std::vector<BlockId>& blocks) {
  for (BlockId b : blocks) {
    assert(ref_counts_[b] > 0);
    if (--ref_counts_[b] > 0) continue;
    if (keys_[b]) {
      lru_pos_[b] = lru_.insert(lru_.end(), b);
    } else {
      free_.push_back(b);
    }
  }
}

std::optional<BlockId> BlockAllocator::Lookup(BlockKey key) const {
  if (!prefix_caching_) return std::nullopt;
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

void BlockAllocator::Publish(BlockId block, BlockKey key) {
  if (!prefix_caching_ || keys_[block] || by_key_.count(key) > 0) return;
  assert(ref_counts_[block] > 0);
  keys_[block] = key;
  by_key_.emplace(key, block);
}

void BlockAllocator::Forget(BlockId block) {
  if (!keys_[block]) return;
  by_key_.erase(*keys_[block]);
  keys_[block].reset();
}

}  // namespace blip2::scheduler
