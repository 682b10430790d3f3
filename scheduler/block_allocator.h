// Logical KV-cache blocks: ids handed out and taken back, with reference
// counts so sequences may share blocks (a common prefix). Pure bookkeeping:
// the engine maps block ids to storage. Not thread-safe (one engine thread).
#pragma once

#include <cstdint>
#include <vector>

namespace blip2::scheduler {

using BlockId = int32_t;

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_used() const { return num_blocks() - num_free(); }
  // For invariant checks: holders of `block`, and the free blocks.
  int32_t ref_count(BlockId block) const { return ref_counts_[block]; }
  const std::vector<BlockId>& free_blocks() const { return free_; }

  // `n` fresh blocks (reference count 1), or an empty vector when fewer are free.
  std::vector<BlockId> Allocate(int64_t n);
  // One more holder of `block` (prefix sharing).
  void Share(BlockId block);
  // Drops one reference of each block; blocks nobody holds become free again.
  void Release(const std::vector<BlockId>& blocks);

 private:
  std::vector<int32_t> ref_counts_;
  std::vector<BlockId> free_;  // a stack: recently freed blocks are reused first
};

// Blocks needed to hold `tokens` tokens.
inline int64_t BlocksFor(int64_t tokens, int64_t block_size) { return (tokens + block_size - 1) / block_size; }

}  // namespace blip2::scheduler
