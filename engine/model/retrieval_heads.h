// The text side of a retrieval checkpoint (transformers'
// Blip2ForImageTextRetrieval, Blip2TextModelWithProjection): BERT-style text
// embeddings (word + position; the Q-Former applies its LayerNorm), the
// Q-Former's text passes, and the two heads:
//  - ITC: text_projection of the [CLS] row, L2-normalised; the similarity to
//    an image is the largest dot product over its normalised query embeddings
//    (no temperature);
//  - ITM: the Q-Former over [queries; text], the queries cross-attending to the
//    image; itm_head on each query row, averaged: [no-match, match] logits.
// The image side (vision_projection) is in image_path.h. The Q-Former runs in
// float32; the embeddings and heads in the compute dtype, as transformers
// keeps them. Internal (ATen).
#pragma once

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/qformer.h"
#include "engine/model/weights.h"

namespace blip2::engine {

class RetrievalHeads {
 public:
  static absl::StatusOr<RetrievalHeads> Load(const WeightLoader& weights, const Blip2Config& config,
                                             at::ScalarType dtype);

  // ids [T, L] int64, mask [T, L] 1/0 (padded texts): the Q-Former's
  // text-only pass, [T, L, H] float32.
  at::Tensor TextHidden(const QFormer& qformer, const at::Tensor& ids, const at::Tensor& mask) const;
  // text_projection of every row, L2-normalised: [T, L, E]. Row 0 is ITC's.
  at::Tensor TextEmbeds(const at::Tensor& text_hidden) const;
  // The ITM pass for image i with text i: image_hidden [B, P, Dv] (the vision
  // encoder's last_hidden_state), ids and mask [B, L]. [B, Q + L, H] float32.
  at::Tensor MatchHidden(const QFormer& qformer, const at::Tensor& image_hidden, const at::Tensor& ids,
                         const at::Tensor& mask) const;
  // [B, 2] float32 logits (index 1: match) from MatchHidden's output.
  at::Tensor MatchLogits(const at::Tensor& match_hidden, int64_t num_queries) const;
  // ITC: image_embeds [B, Q, E] and text_embeds [T, E], both normalised:
  // [B, T] float32, the best query's cosine similarity.
  static at::Tensor Similarity(const at::Tensor& image_embeds, const at::Tensor& text_embeds);

  int64_t max_text_length() const { return position_embeddings_.size(0); }

 private:
  at::Tensor Embed(const at::Tensor& ids) const;  // word + position: [T, L, H] float32

  at::ScalarType dtype_ = at::kFloat;
  at::Tensor word_embeddings_, position_embeddings_;
  Linear text_projection_, itm_head_;
};

}  // namespace blip2::engine
