#include "engine/generation/captioner.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/blip2_model.h"
#include "engine/generation/generator.h"
#include "engine/generation/text_streamer.h"
#include "engine/model/torch_util.h"

namespace blip2::engine {
struct Captioner::Impl {
  std::unique_ptr<Blip2Model> model;
  GenerationLimits limits;
};

Captioner::Captioner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Captioner::~Captioner() = default;

absl::StatusOr<std::unique_ptr<Captioner>> Captioner::Load(const EngineOptions& options,
                                                           const GenerationLimits& limits) {
  auto impl = std::make_unique<Impl>();
  impl->limits = limits;
  ASSIGN_OR_RETURN(impl->model, Blip2Model::Load(options, /*with_language_model=*/true));
  return std::unique_ptr<Captioner>(new Captioner(std::move(impl)));
}

const ModelSpec& Captioner::spec() const { return impl_->model->spec; }
const Tokenizer& Captioner::tokenizer() const { return *impl_->model->tokenizer; }

std::vector<int64_t> Captioner::pixel_shape() const {
  const VisionConfig& v = spec().config.vision;
  return {v.num_channels, v.image_size, v.image_size};
}

absl::StatusOr<std::vector<int64_t>> Captioner::InputIds(const std::string& prompt) const {
  return impl_->model->InputIds(prompt, std::numeric_limits<int64_t>::max(), 0);
}

absl::StatusOr<CaptionResult> Captioner::Generate(const CaptionRequest& request, const TextSink& on_text) const {
  const Blip2Model& model = *impl_->model;
  ASSIGN_OR_RETURN(GenerationParams params,
                   ResolveGenerationParams(spec().generation, request.overrides, impl_->limits));
  if (request.pixels.size() != static_cast<size_t>(pixel_shape()[0] * pixel_shape()[1] * pixel_shape()[2])) {
    return absl::InvalidArgumentError(absl::StrCat("image has ", request.pixels.size(), " pixel values; expected ",
                                                   pixel_shape()[0] * pixel_shape()[1] * pixel_shape()[2]));
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> input_ids,
                   model.InputIds(request.prompt, std::numeric_limits<int64_t>::max(), params.max_new_tokens));
  const Tokenizer& tok = *model.tokenizer;
  const bool stream = on_text && params.num_beams == 1;
  TextStreamer streamer(tok, params.stop_strings, on_text);
  GenerationHooks hooks;
  if (stream || !params.stop_strings.empty()) {
    hooks.on_token = [&](int64_t seq, int64_t token, const std::vector<int64_t>& generated) {
      if (seq == 0 && stream) return streamer.Push(token);
      if (params.stop_strings.empty()) return false;
      auto text = tok.Decode(generated, /*skip_special_tokens=*/true);
      return text.ok() && FindStop(*text, params.stop_strings) != std::string::npos;
    };
  }
  std::vector<Hypothesis> hyps;
  try {
    c10::InferenceMode guard;
    const at::Tensor embeds = model.image_path->Forward(model.PixelBatch({request.pixels})).projected[0];
    const DecoderInput first = model.FirstSteps({EncoderInput{input_ids, embeds}})[0];
    hyps = engine::Generate(model.decoder(), first, params, hooks);
  } catch (const std::exception& e) {
    return StatusFromException(e, "generating");
  }
  if (stream) streamer.Finish();
  CaptionResult result;
  result.prompt_tokens = static_cast<int64_t>(input_ids.size());
  for (const Hypothesis& h : hyps) {
    GeneratedSequence seq;
    seq.token_ids = h.tokens;
    seq.finish_reason = h.reason;
    ASSIGN_OR_RETURN(seq.text, FinalText(tok, h.tokens, h.reason == FinishReason::kEos, params.stop_strings));
    result.sequences.push_back(std::move(seq));
  }
  return result;
}

}  // namespace blip2::engine
