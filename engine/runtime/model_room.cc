#include "engine/runtime/model_room.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace blip2::engine {

std::vector<int64_t> ModelRoom::pixel_shape() const {
  const VisionConfig& v = model->spec.config.vision;
  return {v.num_channels, v.image_size, v.image_size};
}

absl::StatusOr<std::unique_ptr<ModelRoom>> LoadModelRoom(const EngineOptions& options, const EngineConfig& config) {
  auto room = std::make_unique<ModelRoom>();
  ASSIGN_OR_RETURN(const ModelSpec spec, LoadModelSpec(options.model_dir));
  const bool retrieval = spec.config.is_retrieval();
  ASSIGN_OR_RETURN(room->model, Blip2Model::Load(options, /*with_language_model=*/!retrieval));
  if (retrieval) {
    if (!room->model->retrieval) {
      return absl::InvalidArgumentError(absl::StrCat(options.model_dir, ": a retrieval checkpoint without text weights "
                                                     "(qformer_config.use_qformer_text_input is false)"));
    }
    ASSIGN_OR_RETURN(room->text_tokenizer, WordPieceTokenizer::Load(options.model_dir));
    const int64_t positions = room->model->retrieval->max_text_length();
    room->max_text_tokens = config.max_text_tokens > 0 ? std::min(config.max_text_tokens, positions) : positions;
  }
  room->images = std::make_unique<ImageCache>(config.image_cache_bytes);
  room->vision = std::make_unique<VisionBatcher>(*room->model, *room->images, config.vision_max_batch,
                                                 config.vision_max_queue_delay);
  return room;
}

}  // namespace blip2::engine
