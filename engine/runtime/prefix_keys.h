// Content keys of KV blocks for prefix caching. A block's key is a hash
// chained over everything its keys and values depend on: the seed (the image
// key for OPT, whose image rows are part of the prompt; for T5 the image and
// the whole encoder input, which every decoder position attends to), then the
// token ids of every block up to and including it. Two requests share a key
// exactly when their sequences agree up to the end of that block. Torch-free.
#pragma once

#include <cstdint>
#include <vector>

namespace blip2::engine {

// Mixes a 64-bit value into a running hash (splitmix64 finaliser).
inline uint64_t MixHash(uint64_t hash, uint64_t value) {
  uint64_t z = hash ^ (value + 0x9e3779b97f4a7c15ull + (hash << 6) + (hash >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t PrefixSeed(uint64_t image_key, const std::vector<int64_t>& encoder_ids) {
  uint64_t h = MixHash(0x5bd1e995ull, image_key);
  for (int64_t id : encoder_ids) h = MixHash(h, static_cast<uint64_t>(id));
  return MixHash(h, encoder_ids.size());
}

// The keys of the full blocks of `ids` (ids.size() / block_size of them).
inline std::vector<uint64_t> PrefixBlockKeys(uint64_t seed, const std::vector<int64_t>& ids, int64_t block_size) {
  std::vector<uint64_t> keys;
  uint64_t h = seed;
  const size_t full = ids.size() / static_cast<size_t>(block_size);
  for (size_t b = 0; b < full; ++b) {
    for (size_t i = b * block_size; i < (b + 1) * block_size; ++i) h = MixHash(h, static_cast<uint64_t>(ids[i]));
    keys.push_back(h);
  }
  return keys;
}

}  // namespace blip2::engine
