#include "engine/model/qformer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/torch_util.h"

namespace blip2::engine {
namespace {

constexpr at::ScalarType kQFormerDType = at::kFloat;

}  // namespace

absl::StatusOr<QFormer> QFormer::Load(const WeightLoader& w, const QFormerConfig& c, int64_t num_query_tokens) {
  QFormer q;
  q.config_ = c;
  const int64_t h = c.hidden_size;
  const auto dt = kQFormerDType;
  auto load_attention = [&](const std::string& p, int64_t kv_in) -> absl::StatusOr<Attention> {
    Attention a;
    ASSIGN_OR_RETURN(a.query, LoadLinear(w, p + ".attention.query", h, h, dt));
    ASSIGN_OR_RETURN(a.key, LoadLinear(w, p + ".attention.key", kv_in, h, dt));
    ASSIGN_OR_RETURN(a.value, LoadLinear(w, p + ".attention.value", kv_in, h, dt));
    ASSIGN_OR_RETURN(a.dense, LoadLinear(w, p + ".output.dense", h, h, dt));
    ASSIGN_OR_RETURN(a.norm, LoadLayerNorm(w, p + ".output.LayerNorm", h, c.layer_norm_eps, dt));
    return a;
  };
  auto load_ffn = [&](const std::string& inter, const std::string& out) -> absl::StatusOr<Feedforward> {
    Feedforward f;
    ASSIGN_OR_RETURN(f.intermediate, LoadLinear(w, inter + ".dense", h, c.intermediate_size, dt));
    ASSIGN_OR_RETURN(f.output, LoadLinear(w, out + ".dense", c.intermediate_size, h, dt));
    ASSIGN_OR_RETURN(f.norm, LoadLayerNorm(w, out + ".LayerNorm", h, c.layer_norm_eps, dt));
    return f;
  };
  ASSIGN_OR_RETURN(q.query_tokens_, w.Get("query_tokens", {1, num_query_tokens, h}, dt));
  ASSIGN_OR_RETURN(q.embed_norm_, LoadLayerNorm(w, "qformer.layernorm", h, c.layer_norm_eps, dt));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("qformer.encoder.layer.", i);
    Layer layer;
    ASSIGN_OR_RETURN(layer.self_attention, load_attention(p + ".attention", h));
    if (c.HasCrossAttention(i)) {
      ASSIGN_OR_RETURN(layer.cross_attention, load_attention(p + ".crossattention", c.encoder_hidden_size));
    }
    ASSIGN_OR_RETURN(layer.query_ffn, load_ffn(p + ".intermediate_query", p + ".output_query"));
    if (c.use_qformer_text_input) {
      ASSIGN_OR_RETURN(layer.text_ffn, load_ffn(p + ".intermediate", p + ".output"));
    }
    q.layers_.push_back(std::move(layer));
  }
  return q;
}

at::Tensor QFormer::AttentionBlock(const Attention& a, const at::Tensor& x, const at::Tensor& context,
                                   const at::Tensor& additive_mask) const {
  const int64_t batch = x.size(0);
  const int64_t heads = config_.num_attention_heads;
  const int64_t head_dim = config_.head_dim();
  auto split = [&](const at::Tensor& t) { return t.view({batch, t.size(1), heads, head_dim}).transpose(1, 2); };
  at::Tensor q = split(a.query(x));
  at::Tensor k = split(a.key(context));
  at::Tensor v = split(a.value(context));
  std::optional<at::Tensor> mask;
  if (additive_mask.defined()) mask = additive_mask;
  at::Tensor out = ScaledDotAttention(q, k, v, mask, 1.0 / std::sqrt(double(head_dim)));
  out = out.transpose(1, 2).reshape({batch, x.size(1), config_.hidden_size});
  return a.norm(a.dense(out) + x);
}

at::Tensor QFormer::FeedforwardBlock(const Feedforward& f, const at::Tensor& x) const {
  return f.norm(f.output(Activate(f.intermediate(x), config_.hidden_act)) + x);
}

at::Tensor QFormer::ForwardQueries(const at::Tensor& image_embeds) const {
  QFormerInput input;
  input.query_embeds = query_tokens_.expand({image_embeds.size(0), -1, -1});
  input.image_embeds = image_embeds;
  return Forward(input);
}

at::Tensor QFormer::ForwardQueriesWithText(const at::Tensor& image_embeds, const at::Tensor& text_embeds,
                                           const at::Tensor& text_mask) const {
  const int64_t batch = image_embeds.size(0);
  QFormerInput input;
  input.query_embeds = query_tokens_.expand({batch, -1, -1});
  input.text_embeds = text_embeds;
  // The queries see everything; the text rows' padding is masked for all.
  const at::Tensor query_mask = at::ones({batch, num_queries()}, text_mask.options());
  input.attention_mask = at::cat({query_mask, text_mask}, 1);
  input.image_embeds = image_embeds;
  return Forward(input);
}

at::Tensor QFormer::Forward(const QFormerInput& input) const {
  TORCH_CHECK(!input.text_embeds.defined() || config_.use_qformer_text_input,
              "this Q-Former has no text weights (use_qformer_text_input is false)");
  std::vector<at::Tensor> parts;
  if (input.query_embeds.defined()) parts.push_back(input.query_embeds.to(kQFormerDType));
  if (input.text_embeds.defined()) parts.push_back(input.text_embeds.to(kQFormerDType));
  at::Tensor x = embed_norm_(parts.size() == 1 ? parts[0] : at::cat(parts, 1));
  const int64_t num_queries = input.query_embeds.defined() ? input.query_embeds.size(1) : 0;

  // BERT's extended mask: (1 - m) * -10000 added to the scores, [B, 1, 1, S].
  at::Tensor additive_mask;
  if (input.attention_mask.defined()) {
    additive_mask = (1.0 - input.attention_mask.to(x.device(), kQFormerDType)).mul(-10000.0).unsqueeze(1).unsqueeze(1);
  }
  at::Tensor image;
  if (input.image_embeds.defined()) image = input.image_embeds.to(x.device(), kQFormerDType);

  for (const Layer& layer : layers_) {
    at::Tensor a = AttentionBlock(layer.self_attention, x, x, additive_mask);
    if (num_queries == 0) {
      x = FeedforwardBlock(*layer.text_ffn, a);
      continue;
    }
    at::Tensor queries = a.narrow(1, 0, num_queries);
    if (layer.cross_attention && image.defined()) {
      queries = AttentionBlock(*layer.cross_attention, queries, image, at::Tensor());
    }
    queries = FeedforwardBlock(layer.query_ffn, queries);
    if (a.size(1) > num_queries) {
      at::Tensor text = FeedforwardBlock(*layer.text_ffn, a.narrow(1, num_queries, a.size(1) - num_queries));
      x = at::cat({queries, text}, 1);
    } else {
      x = queries;
    }
  }
  return x;
}

}  // namespace blip2::engine
