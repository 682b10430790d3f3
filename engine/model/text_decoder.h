// What the generator and the engine need from a language model's decoder,
// whatever its kind: the OPT decoder-only model (opt_decoder.h) or the Flan-T5
// decoder with cross-attention (t5_model.h). Both run packed steps over many
// sequences that each read and extend their own blocks of a paged KV cache.
// Internal (ATen).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "engine/model/kv_cache.h"

namespace blip2::engine {

// An encoder-decoder request's cross-attention keys and values, computed once
// from its encoder states when the request is admitted and read by every step.
struct CrossAttentionKv {
  std::vector<at::Tensor> keys, values;  // per decoder layer [L, heads, head_dim]
  int64_t length = 0;                    // L: encoder positions
  int64_t bytes() const;
};

// One sequence's part of a step.
struct DecoderInput {
  BlockTable blocks;               // its KV-cache blocks (enough for cached + new tokens)
  int64_t cached = 0;              // tokens already in its blocks; the first new token's position
  std::vector<int64_t> token_ids;  // new tokens (a prefill: many; a decode: one)
  // OPT: [Q, D] rows that replace the embeddings of the `<image>` tokens among
  // token_ids, in order (the projected Q-Former output); undefined if none.
  at::Tensor image_embeds;
  // T5: the request's encoder output as cross-attention keys and values.
  std::shared_ptr<const CrossAttentionKv> cross;
  bool all_logits = false;  // logits for every new token instead of only the last
};

class TextDecoder {
 public:
  virtual ~TextDecoder() = default;
  // Appends each input's tokens to its blocks and returns float32 logits: for
  // each input in order, one row (its last token) or one row per new token.
  // Call under c10::InferenceMode. Callers check positions fit the cache.
  virtual at::Tensor Step(const std::vector<DecoderInput>& inputs, KvCache& cache) const = 0;
  // A paged cache shaped for this model.
  virtual KvCache MakeCache(int64_t num_blocks, int64_t block_size) const = 0;
  // A cache for one-off generation: `slots` sequences of up to max_len tokens.
  virtual KvCache MakeSlotCache(int64_t slots, int64_t max_len) const = 0;
};

}  // namespace blip2::engine
