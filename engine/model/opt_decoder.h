// OPTForCausalLM as BLIP-2 uses it: learned positions (offset 2), pre-LN blocks
// (post-LN when do_layer_norm_before is false), ReLU MLP, optional
// project_in/project_out, output head tied to the input embeddings unless
// `lm_head.weight` is stored. Runs steps over a packed batch of sequences that
// each read and extend their own KV-cache blocks, so prefills and decodes of
// unrelated requests can share one step. Internal (ATen).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/kv_cache.h"
#include "engine/model/text_decoder.h"
#include "engine/model/model_config.h"
#include "engine/model/weights.h"

namespace blip2::engine {

class OptDecoder : public TextDecoder {
 public:
  // Reads `language_model.*` in `dtype`. `image_token_index` marks the
  // placeholder tokens whose embeddings image_embeds replace.
  static absl::StatusOr<OptDecoder> Load(const WeightLoader& weights, const OptConfig& config,
                                         std::optional<int64_t> image_token_index, at::ScalarType dtype);

  // Appends each input's tokens to its blocks and returns float32 logits: for
  // each input in order, one row (its last token) or one row per new token.
  // Call under c10::InferenceMode. Callers check positions fit the cache and
  // max_position_embeddings.
  at::Tensor Step(const std::vector<DecoderInput>& inputs, KvCache& cache) const override;
  // The same step, returning the decoder's last hidden state (after the final
  // LayerNorm and project_out) instead of logits: transformers'
  // Blip2Model.get_text_features.
  at::Tensor HiddenStates(const std::vector<DecoderInput>& inputs, KvCache& cache) const;

  // A paged cache shaped for this model.
  KvCache MakeCache(int64_t num_blocks, int64_t block_size) const override;
  // A cache for one-off generation: `slots` sequences of up to max_len tokens.
  KvCache MakeSlotCache(int64_t slots, int64_t max_len) const override;

  const OptConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return embed_tokens_.device(); }

 private:
  at::Tensor Run(const std::vector<DecoderInput>& inputs, KvCache& cache, bool logits) const;

  struct Layer {
    Linear q, k, v, out, fc1, fc2;
    std::optional<LayerNorm> attn_norm, mlp_norm;
  };

  OptConfig config_;
  std::optional<int64_t> image_token_index_;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor embed_tokens_;     // [V, Dw]
  at::Tensor embed_positions_;  // [max_positions + 2, D]
  std::optional<Linear> project_in_, project_out_;
  std::vector<Layer> layers_;
  std::optional<LayerNorm> final_norm_;
  at::Tensor lm_head_;  // [V, Dw]
};

}  // namespace blip2::engine
