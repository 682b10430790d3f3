// The BLIP-2 image path: pixels -> vision encoder -> Q-Former (query path) ->
// language projection (captioning checkpoints) or vision projection
// (retrieval checkpoints). Internal (ATen); the torch-free facade is
// engine/model/image_encoder.h.
#pragma once

#include <optional>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/qformer.h"
#include "engine/model/vision_encoder.h"
#include "engine/model/weights.h"

namespace blip2::engine {

struct ImagePathOutput {
  VisionOutput vision;
  at::Tensor qformer;      // [B, Q, Hq] float32
  at::Tensor projected;    // [B, Q, D_lm] in the compute dtype; undefined for retrieval checkpoints
  at::Tensor image_embeds; // [B, Q, E] L2-normalised ITC embeddings; retrieval checkpoints only
};

class ImagePath {
 public:
  // Vision and projections in `dtype`; the Q-Former in float32.
  static absl::StatusOr<ImagePath> Load(const WeightLoader& weights, const Blip2Config& config, at::ScalarType dtype);

  // pixels: [B, C, H, W] float. Call under c10::InferenceMode.
  ImagePathOutput Forward(const at::Tensor& pixels) const;

  at::ScalarType dtype() const { return vision_.dtype(); }
  const QFormer& qformer() const { return qformer_; }

 private:
  ImagePath(VisionEncoder vision, QFormer qformer) : vision_(std::move(vision)), qformer_(std::move(qformer)) {}

  VisionEncoder vision_;
  QFormer qformer_;
  std::optional<Linear> language_projection_;
  std::optional<Linear> vision_projection_;
};

}  // namespace blip2::engine
