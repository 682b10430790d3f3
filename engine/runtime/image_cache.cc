#include "engine/runtime/image_cache.h"

#include <cstring>

namespace blip2::engine {

uint64_t ImageKey(const float* pixels, size_t count) {
  // FNV-1a over 64-bit words (an image is ~600 KB: byte-wise hashing cost a
  // millisecond per request), with a final avalanche.
  uint64_t h = 1469598103934665603ull ^ count;
  const auto* bytes = reinterpret_cast<const unsigned char*>(pixels);
  const size_t n = count * sizeof(float);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    h = (h ^ word) * 1099511628211ull;
  }
  for (; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

int64_t CachedImage::bytes() const {
  int64_t total = 0;
  for (const at::Tensor* t : {&projected, &image_embeds, &vision_hidden, &qformer}) {
    if (t->defined()) total += static_cast<int64_t>(t->nbytes());
  }
  return total;
}

const CachedImage* ImageCache::Find(uint64_t key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return &it->second.image;
}

void ImageCache::Insert(uint64_t key, CachedImage image) {
  if (entries_.count(key) > 0) return;
  lru_.push_front(key);
  Entry e;
  e.bytes = image.bytes();
  e.image = std::move(image);
  e.lru = lru_.begin();
  bytes_ += e.bytes;
  entries_.emplace(key, std::move(e));
  Evict(key);
}

void ImageCache::Pin(uint64_t key) {
  ++entries_.at(key).pins;
  ++pins_;
}

void ImageCache::Unpin(uint64_t key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  --it->second.pins;
  --pins_;
  Evict(key);
  if (it->second.pins == 0 && bytes_ > budget_) {  // the last user of an entry over budget
    bytes_ -= it->second.bytes;
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }
}

void ImageCache::Evict(uint64_t keep) {
  for (auto it = lru_.end(); bytes_ > budget_ && it != lru_.begin();) {
    --it;
    auto entry = entries_.find(*it);
    if (entry->second.pins > 0 || *it == keep) continue;
    bytes_ -= entry->second.bytes;
    entries_.erase(entry);
    it = lru_.erase(it);
  }
}

}  // namespace blip2::engine
