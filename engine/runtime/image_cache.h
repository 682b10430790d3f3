// What the image path computed for an image, by content hash, so an image
// already encoded is never encoded again while it stays cached. Bounded in bytes, least recently
// used first out; entries in use by a request are pinned and never evicted.
// Engine thread only. Internal (ATen).
#pragma once

#include <cstdint>
#include <list>
#include <string_view>
#include <unordered_map>

#include <ATen/ATen.h>

namespace blip2::engine {

// A 64-bit content hash (FNV-1a) of an image's preprocessed pixels.
uint64_t ImageKey(const float* pixels, size_t count);

// One image's outputs; each undefined when the checkpoint has no use for it.
struct CachedImage {
  at::Tensor projected;      // [Q, D_lm]: the language model's image tokens (generation)
  at::Tensor image_embeds;   // [Q, E]: normalised ITC embeddings (retrieval)
  at::Tensor vision_hidden;  // [P, Dv]: the vision encoder's output, for ITM (retrieval)
  at::Tensor qformer;        // [Q, H]: raw Q-Former features (retrieval)
  int64_t bytes() const;
};

class ImageCache {
 public:
  explicit ImageCache(int64_t budget_bytes) : budget_(budget_bytes) {}

  // The entry, or nullptr; marks it recently used. The pointer is valid until
  // the next Insert or Unpin.
  const CachedImage* Find(uint64_t key);
  // Adds an entry, then evicts other unpinned entries while over budget (the new
  // one stays until its first user pins and unpins it).
  void Insert(uint64_t key, CachedImage image);
  void Pin(uint64_t key);
  void Unpin(uint64_t key);

  int64_t bytes() const { return bytes_; }
  int64_t size() const { return static_cast<int64_t>(entries_.size()); }
  // Pins held, over all entries (requests using an image, registrations).
  int64_t pins() const { return pins_; }

 private:
  struct Entry {
    CachedImage image;
    int64_t bytes = 0;
    int pins = 0;
    std::list<uint64_t>::iterator lru;
  };
  void Evict(uint64_t keep);

  int64_t budget_;
  int64_t bytes_ = 0;
  int64_t pins_ = 0;
  std::unordered_map<uint64_t, Entry> entries_;
  std::list<uint64_t> lru_;  // front: most recently used
};

}  // namespace blip2::engine
