#include "engine/model/image_path.h"

#include "common/status_macros.h"

namespace blip2::engine {

absl::StatusOr<ImagePath> ImagePath::Load(const WeightLoader& w, const Blip2Config& c, at::ScalarType dtype) {
  ASSIGN_OR_RETURN(VisionEncoder vision, VisionEncoder::Load(w, c.vision, dtype));
  ASSIGN_OR_RETURN(QFormer qformer, QFormer::Load(w, c.qformer, c.num_query_tokens));
  ImagePath path(std::move(vision), std::move(qformer));
  if (c.is_retrieval()) {
    ASSIGN_OR_RETURN(path.vision_projection_,
                     LoadLinear(w, "vision_projection", c.qformer.hidden_size, c.image_text_hidden_size, dtype));
  } else {
    ASSIGN_OR_RETURN(path.language_projection_,
                     LoadLinear(w, "language_projection", c.qformer.hidden_size, c.language_hidden_size(), dtype));
  }
  return path;
}

ImagePathOutput ImagePath::Forward(const at::Tensor& pixels) const {
  ImagePathOutput out;
  out.vision = vision_.Forward(pixels);
  out.qformer = qformer_.ForwardQueries(out.vision.last_hidden_state);
  // transformers casts the float32 Q-Former output back to the vision dtype
  // before the projections.
  const at::Tensor queries = out.qformer.to(vision_.dtype());
  if (language_projection_) out.projected = (*language_projection_)(queries);
  if (vision_projection_) {
    const at::Tensor e = (*vision_projection_)(queries);
    out.image_embeds = e / e.norm(2, -1, /*keepdim=*/true).clamp_min(1e-12);
  }
  return out;
}

}  // namespace blip2::engine
