#include "engine/t5_model.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/torch_util.h"

namespace blip2::engine {
namespace {

// transformers' T5 relative position bucket for key - query = `distance`.
int64_t Bucket(int64_t distance, bool bidirectional, int64_t num_buckets, int64_t max_distance) {
  int64_t bucket = 0;
  if (bidirectional) {
    num_buckets /= 2;
    if (distance > 0) bucket += num_buckets;
    distance = std::abs(distance);
  } else {
    distance = -std::min<int64_t>(distance, 0);
  }
  const int64_t max_exact = num_buckets / 2;
  if (distance < max_exact) return bucket + distance;
  // As transformers computes it: in float32, then truncated.
  const float large = static_cast<float>(max_exact) +
                      std::log(static_cast<float>(distance) / static_cast<float>(max_exact)) /
                          static_cast<float>(std::log(static_cast<double>(max_distance) / max_exact)) *
                          static_cast<float>(num_buckets - max_exact);
  return bucket + std::min<int64_t>(static_cast<int64_t>(large), num_buckets - 1);
}

}  // namespace

absl::StatusOr<T5Model> T5Model::Load(const WeightLoader& w, const T5Config& c,
                                      std::optional<int64_t> image_token_index, at::ScalarType dtype) {
  T5Model m;
  m.config_ = c;
  m.image_token_index_ = image_token_index;
  m.dtype_ = dtype;
  const std::string p = "language_model.";
  const int64_t d = c.d_model, inner = c.num_heads * c.d_kv;
  ASSIGN_OR_RETURN(m.shared_, w.Get(p + "shared.weight", {c.vocab_size, d}, dtype));
  // The released Flan-T5 layout stores its own head; tied checkpoints reuse the embeddings.
  if (w.Has(p + "lm_head.weight")) {
    ASSIGN_OR_RETURN(m.lm_head_, w.Get(p + "lm_head.weight", {c.vocab_size, d}, dtype));
  } else {
    m.lm_head_ = m.shared_;
  }
  const auto load_attention = [&](const std::string& prefix) -> absl::StatusOr<Attention> {
    Attention a;
    ASSIGN_OR_RETURN(a.q, LoadLinear(w, prefix + "q", d, inner, dtype, false));
    ASSIGN_OR_RETURN(a.k, LoadLinear(w, prefix + "k", d, inner, dtype, false));
    ASSIGN_OR_RETURN(a.v, LoadLinear(w, prefix + "v", d, inner, dtype, false));
    ASSIGN_OR_RETURN(a.o, LoadLinear(w, prefix + "o", inner, d, dtype, false));
    return a;
  };
  const auto load_ff = [&](const std::string& prefix) -> absl::StatusOr<FeedForward> {
    FeedForward f;
    if (c.is_gated_act) {
      ASSIGN_OR_RETURN(f.wi_0, LoadLinear(w, prefix + "wi_0", d, c.d_ff, dtype, false));
      ASSIGN_OR_RETURN(f.wi_1, LoadLinear(w, prefix + "wi_1", d, c.d_ff, dtype, false));
    } else {
      ASSIGN_OR_RETURN(f.wi, LoadLinear(w, prefix + "wi", d, c.d_ff, dtype, false));
    }
    ASSIGN_OR_RETURN(f.wo, LoadLinear(w, prefix + "wo", c.d_ff, d, dtype, false));
    return f;
  };
  for (const bool decoder : {false, true}) {
    const std::string stack = p + (decoder ? "decoder." : "encoder.");
    const int64_t layers = decoder ? c.num_decoder_layers : c.num_layers;
    for (int64_t i = 0; i < layers; ++i) {
      const std::string bp = absl::StrCat(stack, "block.", i, ".layer.");
      Block b;
      ASSIGN_OR_RETURN(b.self_attention, load_attention(bp + "0.SelfAttention."));
      ASSIGN_OR_RETURN(b.self_norm, w.Get(bp + "0.layer_norm.weight", {d}, dtype));
      const std::string ff = decoder ? "2" : "1";
      if (decoder) {
        ASSIGN_OR_RETURN(b.cross_attention, load_attention(bp + "1.EncDecAttention."));
        ASSIGN_OR_RETURN(b.cross_norm, w.Get(bp + "1.layer_norm.weight", {d}, dtype));
      }
      ASSIGN_OR_RETURN(b.ff, load_ff(bp + ff + ".DenseReluDense."));
      ASSIGN_OR_RETURN(b.ff_norm, w.Get(bp + ff + ".layer_norm.weight", {d}, dtype));
      (decoder ? m.decoder_ : m.encoder_).push_back(std::move(b));
    }
    // Only the first block holds the position table; every block uses it.
    at::Tensor& table = decoder ? m.decoder_bias_table_ : m.encoder_bias_table_;
    ASSIGN_OR_RETURN(table, w.Get(stack + "block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                  {c.relative_attention_num_buckets, c.num_heads}, dtype));
    at::Tensor& final_norm = decoder ? m.decoder_norm_ : m.encoder_norm_;
    ASSIGN_OR_RETURN(final_norm, w.Get(stack + "final_layer_norm.weight", {d}, dtype));
  }
  return m;
}

at::Tensor T5Model::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  // The variance in float32, then back to the weights' dtype, as transformers does.
  const at::Tensor variance = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
  const at::Tensor normed = x.to(at::kFloat) * at::rsqrt(variance + config_.layer_norm_epsilon);
  return weight * normed.to(weight.scalar_type());
}

at::Tensor T5Model::PositionBias(const at::Tensor& table, int64_t first_query, int64_t queries, int64_t keys,
                                 bool bidirectional) const {
  std::vector<int64_t> buckets(queries * keys);
  for (int64_t q = 0; q < queries; ++q) {
    for (int64_t k = 0; k < keys; ++k) {
      buckets[q * keys + k] = Bucket(k - (first_query + q), bidirectional, config_.relative_attention_num_buckets,
                                     config_.relative_attention_max_distance);
    }
  }
  const at::Tensor index = at::tensor(buckets, at::kLong).to(table.device());
  return table.index_select(0, index).view({queries, keys, -1}).permute({2, 0, 1});  // [H, q, k]
}

at::Tensor T5Model::Heads(const Linear& proj, const at::Tensor& x) const {
  return proj(x).view({-1, config_.num_heads, config_.d_kv}).transpose(0, 1);
}

at::Tensor T5Model::AttendHeads(const Attention& a, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& bias) const {
  // No 1/sqrt(d) scaling in T5; the softmax runs in float32.
  at::Tensor scores = at::matmul(q, k.transpose(1, 2));
  if (bias.defined()) scores = scores + bias;
  const at::Tensor weights = at::softmax(scores.to(at::kFloat), -1).to(scores.scalar_type());
  return a.o(at::matmul(weights, v).transpose(0, 1).reshape({-1, config_.num_heads * config_.d_kv}));
}

at::Tensor T5Model::Attend(const Attention& a, const at::Tensor& x, const at::Tensor& memory,
                           const at::Tensor& bias) const {
  return AttendHeads(a, Heads(a.q, x), Heads(a.k, memory), Heads(a.v, memory), bias);
}

at::Tensor T5Model::Feed(const FeedForward& f, const at::Tensor& x) const {
  if (config_.is_gated_act) return f.wo(Activate(f.wi_0(x), config_.dense_act_fn) * f.wi_1(x));
  return f.wo(Activate(f.wi(x), config_.dense_act_fn));
}

at::Tensor T5Model::Encode(const at::Tensor& image_embeds, const std::vector<int64_t>& input_ids) const {
  const at::Device dev = device();
  at::Tensor h = shared_.index_select(0, at::tensor(input_ids, at::kLong).to(dev));
  if (image_embeds.defined() && image_token_index_) {
    std::vector<int64_t> rows;
    for (size_t j = 0; j < input_ids.size(); ++j) {
      if (input_ids[j] == *image_token_index_) rows.push_back(static_cast<int64_t>(j));
    }
    TORCH_CHECK(static_cast<int64_t>(rows.size()) == image_embeds.size(0), "expected ", image_embeds.size(0),
                " <image> tokens, found ", rows.size());
    h.index_copy_(0, at::tensor(rows, at::kLong).to(dev), image_embeds.to(dtype_));
  }
  const int64_t n = h.size(0);
  const at::Tensor bias = PositionBias(encoder_bias_table_, 0, n, n, /*bidirectional=*/true);
  for (const Block& b : encoder_) {
    h = h + Attend(b.self_attention, RmsNorm(h, b.self_norm), RmsNorm(h, b.self_norm), bias);
    h = h + Feed(b.ff, RmsNorm(h, b.ff_norm));
  }
  return RmsNorm(h, encoder_norm_);
}

at::Tensor T5Model::Decode(const at::Tensor& encoder_states, const std::vector<int64_t>& decoder_ids) const {
  const at::Device dev = device();
  at::Tensor h = shared_.index_select(0, at::tensor(decoder_ids, at::kLong).to(dev));
  const int64_t n = h.size(0);
  // Causal: a query sees keys up to itself.
  const at::Tensor causal = at::ones({n, n}, at::TensorOptions().dtype(at::kBool).device(dev)).triu(1);
  at::Tensor bias = PositionBias(decoder_bias_table_, 0, n, n, /*bidirectional=*/false);
  bias = bias.masked_fill(causal, std::numeric_limits<float>::lowest());
  for (const Block& b : decoder_) {
    const at::Tensor x = RmsNorm(h, b.self_norm);
    h = h + Attend(b.self_attention, x, x, bias);
    h = h + Attend(b.cross_attention, RmsNorm(h, b.cross_norm), encoder_states, at::Tensor());
    h = h + Feed(b.ff, RmsNorm(h, b.ff_norm));
  }
  return Head(h);
}

at::Tensor T5Model::Head(at::Tensor h) const {
  h = RmsNorm(h, decoder_norm_);
  if (config_.scale_decoder_outputs) h = h * std::pow(static_cast<double>(config_.d_model), -0.5);
  return at::linear(h, lm_head_).to(at::kFloat);
}

T5Model::DecodeState T5Model::StartDecoding(const at::Tensor& encoder_states) const {
  DecodeState state;
  for (const Block& b : decoder_) {
    state.cross_k.push_back(Heads(b.cross_attention.k, encoder_states));
    state.cross_v.push_back(Heads(b.cross_attention.v, encoder_states));
    state.self_k.emplace_back();
    state.self_v.emplace_back();
  }
  return state;
}

at::Tensor T5Model::DecodeStep(DecodeState& state, int64_t token) const {
  const int64_t pos = state.length;
  at::Tensor h = shared_.index_select(0, at::tensor(std::vector<int64_t>{token}, at::kLong).to(device()));
  // The new token's row of the causal bias: keys 0..pos, all visible.
  const at::Tensor bias = PositionBias(decoder_bias_table_, pos, 1, pos + 1, /*bidirectional=*/false);
  for (size_t l = 0; l < decoder_.size(); ++l) {
    const Block& b = decoder_[l];
    const at::Tensor x = RmsNorm(h, b.self_norm);
    const at::Tensor k = Heads(b.self_attention.k, x), v = Heads(b.self_attention.v, x);
    state.self_k[l] = state.self_k[l].defined() ? at::cat({state.self_k[l], k}, 1) : k;
    state.self_v[l] = state.self_v[l].defined() ? at::cat({state.self_v[l], v}, 1) : v;
    h = h + AttendHeads(b.self_attention, Heads(b.self_attention.q, x), state.self_k[l], state.self_v[l], bias);
    h = h + AttendHeads(b.cross_attention, Heads(b.cross_attention.q, RmsNorm(h, b.cross_norm)), state.cross_k[l],
                        state.cross_v[l], at::Tensor());
    h = h + Feed(b.ff, RmsNorm(h, b.ff_norm));
  }
  ++state.length;
  return Head(h)[0];
}

}  // namespace blip2::engine
