#include "engine/opt_decoder.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/torch_util.h"

namespace blip2::engine {
namespace {

// OPT's learned positions are stored with an offset of 2 (padding rows).
constexpr int64_t kPositionOffset = 2;
// OPT builds its LayerNorms without an eps: PyTorch's default.
constexpr double kOptLayerNormEps = 1e-5;

}  // namespace

absl::StatusOr<OptDecoder> OptDecoder::Load(const WeightLoader& w, const OptConfig& c,
                                            std::optional<int64_t> image_token_index, at::ScalarType dtype) {
  OptDecoder dec;
  dec.config_ = c;
  dec.image_token_index_ = image_token_index;
  dec.dtype_ = dtype;
  const std::string p = "language_model.model.decoder.";
  const int64_t d = c.hidden_size;
  const bool bias = c.enable_bias;
  const bool affine = c.layer_norm_elementwise_affine;
  ASSIGN_OR_RETURN(dec.embed_tokens_, w.Get(p + "embed_tokens.weight", {c.vocab_size, c.word_embed_proj_dim}, dtype));
  ASSIGN_OR_RETURN(dec.embed_positions_,
                   w.Get(p + "embed_positions.weight", {c.max_position_embeddings + kPositionOffset, d}, dtype));
  if (c.word_embed_proj_dim != d) {
    ASSIGN_OR_RETURN(dec.project_in_, LoadLinear(w, p + "project_in", c.word_embed_proj_dim, d, dtype, false));
    ASSIGN_OR_RETURN(dec.project_out_, LoadLinear(w, p + "project_out", d, c.word_embed_proj_dim, dtype, false));
  }
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string lp = absl::StrCat(p, "layers.", i, ".");
    Layer layer;
    ASSIGN_OR_RETURN(layer.q, LoadLinear(w, lp + "self_attn.q_proj", d, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.k, LoadLinear(w, lp + "self_attn.k_proj", d, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.v, LoadLinear(w, lp + "self_attn.v_proj", d, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.out, LoadLinear(w, lp + "self_attn.out_proj", d, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.fc1, LoadLinear(w, lp + "fc1", d, c.ffn_dim, dtype, bias));
    ASSIGN_OR_RETURN(layer.fc2, LoadLinear(w, lp + "fc2", c.ffn_dim, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.attn_norm, LoadLayerNorm(w, lp + "self_attn_layer_norm", d, kOptLayerNormEps, dtype, affine));
    ASSIGN_OR_RETURN(layer.mlp_norm, LoadLayerNorm(w, lp + "final_layer_norm", d, kOptLayerNormEps, dtype, affine));
    dec.layers_.push_back(std::move(layer));
  }
  if (c.do_layer_norm_before && !c.remove_final_layer_norm) {
    ASSIGN_OR_RETURN(dec.final_norm_, LoadLayerNorm(w, p + "final_layer_norm", d, kOptLayerNormEps, dtype, affine));
  }
  // The head is tied to the input embeddings; checkpoints may store a copy.
  if (w.Has("language_model.lm_head.weight")) {
    ASSIGN_OR_RETURN(dec.lm_head_, w.Get("language_model.lm_head.weight", {c.vocab_size, c.word_embed_proj_dim}, dtype));
  } else {
    dec.lm_head_ = dec.embed_tokens_;
  }
  return dec;
}

KvCache OptDecoder::MakeCache(int64_t num_blocks, int64_t block_size) const {
  const int64_t heads = config_.num_attention_heads;
  return KvCache(config_.num_hidden_layers, num_blocks, block_size, heads, config_.hidden_size / heads, dtype_,
                 device());
}

KvCache OptDecoder::MakeSlotCache(int64_t slots, int64_t max_len) const {
  const int64_t heads = config_.num_attention_heads;
  return KvCache::ForSlots(config_.num_hidden_layers, slots, max_len, heads, config_.hidden_size / heads, dtype_,
                           device());
}

at::Tensor OptDecoder::Step(const std::vector<DecoderInput>& inputs, KvCache& cache) const {
  const at::Device dev = device();
  const int64_t d = config_.hidden_size;
  const int64_t heads = config_.num_attention_heads;
  const int64_t head_dim = d / heads;
  const double scaling = std::pow(static_cast<double>(head_dim), -0.5);

  // Pack every input's new tokens into one [T, ...] batch.
  std::vector<int64_t> ids, positions, logit_rows;
  for (const DecoderInput& in : inputs) {
    for (size_t j = 0; j < in.token_ids.size(); ++j) {
      ids.push_back(in.token_ids[j]);
      positions.push_back(in.cached + static_cast<int64_t>(j) + kPositionOffset);
      if (in.all_logits || j + 1 == in.token_ids.size()) logit_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
    }
  }
  const at::Tensor id_tensor = at::tensor(ids, at::kLong).to(dev);
  at::Tensor h = embed_tokens_.index_select(0, id_tensor);
  // Projected Q-Former outputs take the place of the <image> placeholders.
  int64_t offset = 0;
  for (const DecoderInput& in : inputs) {
    if (in.image_embeds.defined() && image_token_index_) {
      std::vector<int64_t> rows;
      for (size_t j = 0; j < in.token_ids.size(); ++j) {
        if (in.token_ids[j] == *image_token_index_) rows.push_back(offset + static_cast<int64_t>(j));
      }
      TORCH_CHECK(static_cast<int64_t>(rows.size()) == in.image_embeds.size(0), "expected ", in.image_embeds.size(0),
                  " <image> tokens, found ", rows.size());
      h.index_copy_(0, at::tensor(rows, at::kLong).to(dev), in.image_embeds.to(dtype_));
    }
    offset += static_cast<int64_t>(in.token_ids.size());
  }
  if (project_in_) h = (*project_in_)(h);
  h = h + embed_positions_.index_select(0, at::tensor(positions, at::kLong).to(dev));

  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    at::Tensor residual = h;
    at::Tensor x = config_.do_layer_norm_before ? (*layer.attn_norm)(h) : h;
    // transformers scales q before the product and calls attention with scale 1.
    const at::Tensor q = (layer.q(x) * scaling).view({-1, heads, head_dim}).transpose(0, 1);  // [H, T, hd]
    const at::Tensor k = layer.k(x).view({-1, heads, head_dim}).transpose(0, 1);
    const at::Tensor v = layer.v(x).view({-1, heads, head_dim}).transpose(0, 1);
    std::vector<at::Tensor> outputs;
    int64_t row = 0;
    for (const DecoderInput& in : inputs) {
      const int64_t n = static_cast<int64_t>(in.token_ids.size());
      const int64_t total = in.cached + n;
      cache.Write(static_cast<int64_t>(l), in.blocks, in.cached, k.narrow(1, row, n).transpose(0, 1),
                  v.narrow(1, row, n).transpose(0, 1));
      const auto [seq_k, seq_v] = cache.Read(static_cast<int64_t>(l), in.blocks, total);  // [H, total, hd]
      std::optional<at::Tensor> mask;
      if (n > 1) {  // new token j sees the cache and new tokens up to itself
        mask = at::ones({n, total}, at::TensorOptions().dtype(at::kBool).device(dev)).tril(in.cached);
      }
      outputs.push_back(at::scaled_dot_product_attention(q.narrow(1, row, n).unsqueeze(0),
                                                         seq_k.unsqueeze(0), seq_v.unsqueeze(0), mask, 0.0,
                                                         /*is_causal=*/false, /*scale=*/1.0)
                            .squeeze(0));
      row += n;
    }
    const at::Tensor attn = at::cat(outputs, 1).transpose(0, 1).reshape({-1, d});
    h = residual + layer.out(attn);
    if (!config_.do_layer_norm_before) h = (*layer.attn_norm)(h);
    residual = h;
    x = config_.do_layer_norm_before ? (*layer.mlp_norm)(h) : h;
    h = residual + layer.fc2(Activate(layer.fc1(x), config_.activation_function));
    if (!config_.do_layer_norm_before) h = (*layer.mlp_norm)(h);
  }
  h = h.index_select(0, at::tensor(logit_rows, at::kLong).to(dev));
  if (final_norm_) h = (*final_norm_)(h);
  if (project_out_) h = (*project_out_)(h);
  return at::linear(h, lm_head_).to(at::kFloat);
}

}  // namespace blip2::engine
