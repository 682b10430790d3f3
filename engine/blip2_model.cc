#include "engine/blip2_model.h"

#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "engine/torch_util.h"

namespace blip2::engine {

absl::StatusOr<std::unique_ptr<Blip2Model>> Blip2Model::Load(const EngineOptions& options, bool with_language_model) {
  auto model = std::make_unique<Blip2Model>();
  ASSIGN_OR_RETURN(model->spec, LoadModelSpec(options.model_dir));
  ASSIGN_OR_RETURN(model->device, ParseDevice(options.device));
  ASSIGN_OR_RETURN(model->dtype, ParseComputeDType(options.dtype));
  const Blip2Config& c = model->spec.config;
  if (with_language_model && c.language_model != LanguageModelKind::kOpt) {
    return absl::UnimplementedError(absl::StrCat(options.model_dir, ": text generation supports OPT language models; ",
                                                 c.is_retrieval() ? "this is a retrieval checkpoint" : "this one is T5"));
  }
  if (with_language_model && !c.image_token_index) {
    return absl::InvalidArgumentError(absl::StrCat(options.model_dir, "/config.json: image_token_index is required"));
  }
  ASSIGN_OR_RETURN(model->checkpoint, Checkpoint::Open(options.model_dir));
  const auto start = std::chrono::steady_clock::now();
  try {
    c10::InferenceMode guard;
    WeightLoader weights(*model->checkpoint, model->device);
    ASSIGN_OR_RETURN(ImagePath path, ImagePath::Load(weights, c, model->dtype));
    model->image_path.emplace(std::move(path));
    if (with_language_model) {
      ASSIGN_OR_RETURN(OptDecoder opt, OptDecoder::Load(weights, c.opt, c.image_token_index, model->dtype));
      model->opt.emplace(std::move(opt));
    }
  } catch (const std::exception& e) {
    return StatusFromException(e, absl::StrCat("loading ", options.model_dir));
  }
  common::LogInfo("engine", absl::StrFormat(
      "loaded %s (vision %dx%d, Q-Former %dx%d, %d queries%s) on %s in %s in %.2f s", options.model_dir,
      c.vision.num_hidden_layers, c.vision.hidden_size, c.qformer.num_hidden_layers, c.qformer.hidden_size,
      c.num_query_tokens,
      with_language_model ? absl::StrFormat(", OPT %dx%d", c.opt.num_hidden_layers, c.opt.hidden_size) : "",
      options.device, options.dtype,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()));
  return model;
}

at::Tensor Blip2Model::PixelBatch(const std::vector<std::vector<float>>& images) const {
  std::vector<const std::vector<float>*> pointers;
  for (const auto& image : images) pointers.push_back(&image);
  return PixelBatch(pointers);
}

at::Tensor Blip2Model::PixelBatch(const std::vector<const std::vector<float>*>& images) const {
  const VisionConfig& v = spec.config.vision;
  const int64_t per_image = v.num_channels * v.image_size * v.image_size;
  at::Tensor pixels =
      at::empty({static_cast<int64_t>(images.size()), v.num_channels, v.image_size, v.image_size}, at::kFloat);
  for (size_t i = 0; i < images.size(); ++i) {
    std::memcpy(pixels[static_cast<int64_t>(i)].data_ptr<float>(), images[i]->data(), per_image * sizeof(float));
  }
  return pixels.to(device);
}

}  // namespace blip2::engine
