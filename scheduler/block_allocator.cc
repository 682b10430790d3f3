#include "scheduler/block_allocator.h"

#include <cassert>

namespace blip2::scheduler {

BlockAllocator::BlockAllocator(int64_t num_blocks) : ref_counts_(num_blocks, 0) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<BlockId>(b));
}

std::vector<BlockId> BlockAllocator::Allocate(int64_t n) {
  if (n > num_free()) return {};
  std::vector<BlockId> blocks(free_.end() - n, free_.end());
  free_.resize(free_.size() - n);
  for (BlockId b : blocks) ref_counts_[b] = 1;
  return blocks;
}

void BlockAllocator::Share(BlockId block) {
  assert(ref_counts_[block] > 0);
  ++ref_counts_[block];
}

void BlockAllocator::Release(const std::vector<BlockId>& blocks) {
  for (BlockId b : blocks) {
    assert(ref_counts_[b] > 0);
    if (--ref_counts_[b] == 0) free_.push_back(b);
  }
}

}  // namespace blip2::scheduler
