// Blip2QFormerModel: post-LN BERT layers whose query rows cross-attend to the
// image every `cross_attention_frequency` layers. Always computed in float32, as
// transformers keeps it (`_keep_in_fp32_modules`). Internal (ATen).
#pragma once

#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/weights.h"

namespace blip2::engine {

struct QFormerInput {
  at::Tensor query_embeds;    // [B, Q, H], or undefined for a text-only pass
  at::Tensor text_embeds;     // [B, L, H] (already embedded), or undefined
  at::Tensor attention_mask;  // [B, Q + L] of 1/0, or undefined for all ones
  at::Tensor image_embeds;    // [B, T, Dv] vision last_hidden_state, or undefined
};

class QFormer {
 public:
  // Reads `qformer.*` and `query_tokens` in float32; the text FFN weights too
  // when the config says the Q-Former takes text (retrieval checkpoints).
  static absl::StatusOr<QFormer> Load(const WeightLoader& weights, const QFormerConfig& config,
                                      int64_t num_query_tokens);

  // The query path used for captioning: learned queries attend to the image.
  // image_embeds: [B, T, Dv] in any dtype. Returns [B, Q, H] float32.
  at::Tensor ForwardQueries(const at::Tensor& image_embeds) const;

  // The general pass: [queries; text] rows with self-attention over both, the
  // query rows cross-attending to the image. Returns [B, Q + L, H] float32.
  at::Tensor Forward(const QFormerInput& input) const;

  // Image-text matching: the learned queries, then the embedded text
  // [B, L, H] (its mask [B, L] of 1/0), the queries cross-attending to
  // image_embeds [B, T, Dv]. Returns [B, Q + L, H] float32.
  at::Tensor ForwardQueriesWithText(const at::Tensor& image_embeds, const at::Tensor& text_embeds,
                                    const at::Tensor& text_mask) const;

  int64_t num_queries() const { return query_tokens_.size(1); }

 private:
  struct Attention {
    Linear query, key, value, dense;
    LayerNorm norm;
  };
  struct Feedforward {
    Linear intermediate, output;
    LayerNorm norm;
  };
  struct Layer {
    Attention self_attention;
    std::optional<Attention> cross_attention;
    Feedforward query_ffn;
    std::optional<Feedforward> text_ffn;
  };

  // LayerNorm(dense(MultiHeadAttention(x -> context)) + x).
  at::Tensor AttentionBlock(const Attention& a, const at::Tensor& x, const at::Tensor& context,
                            const at::Tensor& additive_mask) const;
  at::Tensor FeedforwardBlock(const Feedforward& f, const at::Tensor& x) const;

  QFormerConfig config_;
  at::Tensor query_tokens_;  // [1, Q, H]
  LayerNorm embed_norm_;
  std::vector<Layer> layers_;
};

}  // namespace blip2::engine
