#include "engine/model/retrieval_heads.h"

#include "common/status_macros.h"

namespace blip2::engine {

absl::StatusOr<RetrievalHeads> RetrievalHeads::Load(const WeightLoader& w, const Blip2Config& c,
                                                    at::ScalarType dtype) {
  const QFormerConfig& q = c.qformer;
  RetrievalHeads heads;
  heads.dtype_ = dtype;
  ASSIGN_OR_RETURN(heads.word_embeddings_, w.Get("embeddings.word_embeddings.weight", {q.vocab_size, q.hidden_size}, dtype));
  ASSIGN_OR_RETURN(heads.position_embeddings_,
                   w.Get("embeddings.position_embeddings.weight", {q.max_position_embeddings, q.hidden_size}, dtype));
  ASSIGN_OR_RETURN(heads.text_projection_, LoadLinear(w, "text_projection", q.hidden_size, c.image_text_hidden_size, dtype));
  ASSIGN_OR_RETURN(heads.itm_head_, LoadLinear(w, "itm_head", q.hidden_size, 2, dtype));
  return heads;
}

at::Tensor RetrievalHeads::Embed(const at::Tensor& ids) const {
  const at::Tensor positions = at::arange(ids.size(1), ids.options()).unsqueeze(0);
  const at::Tensor e = at::embedding(word_embeddings_, ids) + at::embedding(position_embeddings_, positions);
  return e.to(at::kFloat);  // into the float32 Q-Former
}

at::Tensor RetrievalHeads::TextHidden(const QFormer& qformer, const at::Tensor& ids, const at::Tensor& mask) const {
  QFormerInput input;
  input.text_embeds = Embed(ids);
  input.attention_mask = mask;
  return qformer.Forward(input);
}

at::Tensor RetrievalHeads::TextEmbeds(const at::Tensor& text_hidden) const {
  const at::Tensor e = text_projection_(text_hidden.to(dtype_));
  return e / e.norm(2, -1, /*keepdim=*/true).clamp_min(1e-12);
}

at::Tensor RetrievalHeads::MatchHidden(const QFormer& qformer, const at::Tensor& image_hidden, const at::Tensor& ids,
                                       const at::Tensor& mask) const {
  return qformer.ForwardQueriesWithText(image_hidden, Embed(ids), mask);
}

at::Tensor RetrievalHeads::MatchLogits(const at::Tensor& match_hidden, int64_t num_queries) const {
  return itm_head_(match_hidden.narrow(1, 0, num_queries).to(dtype_)).mean(1).to(at::kFloat);
}

at::Tensor RetrievalHeads::Similarity(const at::Tensor& image_embeds, const at::Tensor& text_embeds) {
  // [B, Q, E] x [E, T] -> [B, Q, T], then the best query.
  return std::get<0>(at::matmul(image_embeds, text_embeds.t()).max(1)).to(at::kFloat);
}

}  // namespace blip2::engine
