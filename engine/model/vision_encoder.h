// Blip2VisionModel: EVA ViT-g with pre-LN blocks, a fused qkv projection whose
// key part has no bias, erf GELU, and a final post_layernorm. Internal (ATen).
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/weights.h"

namespace blip2::engine {

struct VisionOutput {
  at::Tensor last_hidden_state;  // [B, 1 + patches, D], after post_layernorm
  at::Tensor pooler_output;      // [B, D]: post_layernorm applied again to row 0 (as transformers does)
};

class VisionEncoder {
 public:
  // Reads `vision_model.*` in `dtype` on the loader's device.
  static absl::StatusOr<VisionEncoder> Load(const WeightLoader& weights, const VisionConfig& config,
                                            at::ScalarType dtype);

  // pixels: [B, C, H, W] of any floating dtype; computed in the encoder's dtype.
  VisionOutput Forward(const at::Tensor& pixels) const;

  at::ScalarType dtype() const { return dtype_; }

 private:
  struct Layer {
    LayerNorm norm1, norm2;
    Linear qkv, projection, fc1, fc2;
  };

  VisionConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor patch_weight_, patch_bias_;  // conv [D, C, P, P], [D]
  at::Tensor class_embedding_;            // [1, 1, D]
  at::Tensor position_embedding_;         // [1, T, D]
  std::vector<Layer> layers_;
  LayerNorm post_layernorm_;
};

}  // namespace blip2::engine
