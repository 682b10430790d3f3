#include "engine/model/vision_encoder.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/torch_util.h"

namespace blip2::engine {
namespace {

// Checkpoints store the attention bias either fused (`qkv.bias`, whose key part
// may be non-zero in random checkpoints and cancels in softmax) or, in older
// revisions, as `q_bias` and `v_bias` with an implied zero key bias.
absl::StatusOr<at::Tensor> LoadQkvBias(const WeightLoader& w, const std::string& prefix, int64_t dim,
                                       at::ScalarType dtype) {
  if (w.Has(prefix + ".qkv.bias")) return w.Get(prefix + ".qkv.bias", {3 * dim}, dtype);
  if (w.Has(prefix + ".q_bias") || w.Has(prefix + ".v_bias")) {
    ASSIGN_OR_RETURN(at::Tensor q, w.Get(prefix + ".q_bias", {dim}, dtype));
    ASSIGN_OR_RETURN(at::Tensor v, w.Get(prefix + ".v_bias", {dim}, dtype));
    return at::cat({q, at::zeros_like(q), v});
  }
  return absl::NotFoundError(absl::StrCat(w.checkpoint().model_dir(), ": checkpoint has neither \"", prefix,
                                          ".qkv.bias\" nor \"", prefix, ".q_bias\" + \"", prefix, ".v_bias\""));
}

}  // namespace

absl::StatusOr<VisionEncoder> VisionEncoder::Load(const WeightLoader& w, const VisionConfig& c,
                                                  at::ScalarType dtype) {
  VisionEncoder enc;
  enc.config_ = c;
  enc.dtype_ = dtype;
  const int64_t d = c.hidden_size;
  const std::string p = "vision_model.";
  ASSIGN_OR_RETURN(enc.patch_weight_,
                   w.Get(p + "embeddings.patch_embedding.weight", {d, c.num_channels, c.patch_size, c.patch_size}, dtype));
  ASSIGN_OR_RETURN(enc.patch_bias_, w.Get(p + "embeddings.patch_embedding.bias", {d}, dtype));
  ASSIGN_OR_RETURN(enc.class_embedding_, w.Get(p + "embeddings.class_embedding", {1, 1, d}, dtype));
  ASSIGN_OR_RETURN(enc.position_embedding_,
                   w.Get(p + "embeddings.position_embedding", {1, c.sequence_length(), d}, dtype));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string lp = absl::StrCat(p, "encoder.layers.", i, ".");
    Layer layer;
    ASSIGN_OR_RETURN(layer.norm1, LoadLayerNorm(w, lp + "layer_norm1", d, c.layer_norm_eps, dtype));
    ASSIGN_OR_RETURN(layer.norm2, LoadLayerNorm(w, lp + "layer_norm2", d, c.layer_norm_eps, dtype));
    ASSIGN_OR_RETURN(layer.qkv, LoadLinear(w, lp + "self_attn.qkv", d, 3 * d, dtype, /*has_bias=*/false));
    if (c.qkv_bias) {
      ASSIGN_OR_RETURN(layer.qkv.bias, LoadQkvBias(w, lp + "self_attn", d, dtype));
    }
    ASSIGN_OR_RETURN(layer.projection, LoadLinear(w, lp + "self_attn.projection", d, d, dtype));
    ASSIGN_OR_RETURN(layer.fc1, LoadLinear(w, lp + "mlp.fc1", d, c.intermediate_size, dtype));
    ASSIGN_OR_RETURN(layer.fc2, LoadLinear(w, lp + "mlp.fc2", c.intermediate_size, d, dtype));
    enc.layers_.push_back(std::move(layer));
  }
  ASSIGN_OR_RETURN(enc.post_layernorm_, LoadLayerNorm(w, p + "post_layernorm", d, c.layer_norm_eps, dtype));
  return enc;
}

VisionOutput VisionEncoder::Forward(const at::Tensor& pixels) const {
  const int64_t batch = pixels.size(0);
  const int64_t d = config_.hidden_size;
  const int64_t heads = config_.num_attention_heads;
  const int64_t head_dim = config_.head_dim();
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));

  at::Tensor x = pixels.to(patch_weight_.device(), dtype_);
  x = at::conv2d(x, patch_weight_, patch_bias_, {config_.patch_size, config_.patch_size});
  x = x.flatten(2).transpose(1, 2);  // [B, patches, D], row-major over the grid
  x = at::cat({class_embedding_.expand({batch, 1, d}), x}, 1);
  x = x + position_embedding_.narrow(1, 0, x.size(1));
  const int64_t tokens = x.size(1);

  for (const Layer& layer : layers_) {
    at::Tensor residual = x;
    at::Tensor h = layer.norm1(x);
    // Output features are ordered q | k | v, each head contiguous.
    at::Tensor qkv = layer.qkv(h).reshape({batch, tokens, 3, heads, head_dim}).permute({2, 0, 3, 1, 4});
    at::Tensor attn = ScaledDotAttention(qkv[0], qkv[1], qkv[2], /*mask=*/std::nullopt, scale);
    attn = attn.transpose(1, 2).reshape({batch, tokens, d});
    x = layer.projection(attn) + residual;
    residual = x;
    h = layer.norm2(x);
    x = layer.fc2(Activate(layer.fc1(h), config_.hidden_act)) + residual;
  }
  VisionOutput out;
  out.last_hidden_state = post_layernorm_(x);
  out.pooler_output = post_layernorm_(out.last_hidden_state.select(1, 0));
  return out;
}

}  // namespace blip2::engine
