// Logical KV-cache blocks: ids handed out and taken back, with reference
// counts so sequences may share blocks (beams forked from one parent, requests
// with a common prefix). Pure bookkeeping: the engine maps block ids to storage.
// Not thread-safe (one engine thread).
//
// Prefix cache. A full block whose content is known may be published under a
// content key (a hash chained over the image and the token ids up to the end
// of the block, computed by the engine). When nobody holds it any more it is
// not wiped: it waits on an LRU list, still findable by its key, until a fresh
// block is needed and none is free, when the least recently released one is
// evicted (its key forgotten). A later request with the same prefix shares it
// again (Lookup + Share) instead of recomputing it.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

namespace blip2::scheduler {

using BlockId = int32_t;
using BlockKey = uint64_t;

struct PrefixCacheStats {
  int64_t hits = 0;       // prompt blocks found in the cache at admission
  int64_t misses = 0;     // prompt blocks that had to be computed
  int64_t evictions = 0;  // cached blocks given to new content
};

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks, bool prefix_caching = false);

  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  // Blocks nobody holds: never used, or cached and evictable.
  int64_t num_free() const { return static_cast<int64_t>(free_.size() + lru_.size()); }
  int64_t num_used() const { return num_blocks() - num_free(); }
  // Unheld blocks that keep their content for a later prefix hit.
  int64_t num_cached() const { return static_cast<int64_t>(lru_.size()); }
  bool prefix_caching() const { return prefix_caching_; }
  // For invariant checks: holders of `block`, the blank free blocks, and the
  // unheld cached ones (least recently released first).
  int32_t ref_count(BlockId block) const { return ref_counts_[block]; }
  const std::vector<BlockId>& free_blocks() const { return free_; }
  const std::list<BlockId>& cached_blocks() const { return lru_; }
  std::optional<BlockKey> key_of(BlockId block) const;

  // `n` fresh blocks (reference count 1), or an empty vector when fewer than n
  // are free. Blank blocks go first; then cached ones are evicted, oldest first.
  std::vector<BlockId> Allocate(int64_t n);
  // One more holder of `block`: a fork, or a prefix hit (which takes a cached
  // block off the LRU list).
  void Share(BlockId block);
  // Drops one reference of each block; a block nobody holds becomes free, or
  // cached when it has a key.
  void Release(const std::vector<BlockId>& blocks);

  // The block published under `key`, held or cached; nullopt when none (or
  // prefix caching is off).
  std::optional<BlockId> Lookup(BlockKey key) const;
  // Names a held, full block by its content. A key already published keeps its
  // first block (the new one stays anonymous); a block keeps its first key.
  void Publish(BlockId block, BlockKey key);
  PrefixCacheStats& stats() { return stats_; }
  const PrefixCacheStats& stats() const { return stats_; }

 private:
  void Forget(BlockId block);

  bool prefix_caching_;
  std::vector<int32_t> ref_counts_;
  std::vector<BlockId> free_;  // blank blocks, a stack: recently freed blocks are reused first
  std::list<BlockId> lru_;     // unheld cached blocks, least recently released first
  std::vector<std::list<BlockId>::iterator> lru_pos_;  // valid while the block is on lru_
  std::vector<std::optional<BlockKey>> keys_;
  std::unordered_map<BlockKey, BlockId> by_key_;
  PrefixCacheStats stats_;
};

// Blocks needed to hold `tokens` tokens.
inline int64_t BlocksFor(int64_t tokens, int64_t block_size) { return (tokens + block_size - 1) / block_size; }

}  // namespace blip2::scheduler
