#include "engine/model/blip2_model.h"

#include <c10/core/InferenceMode.h>

#include <malloc.h>

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/unigram_tokenizer.h"
#include "engine/model/torch_util.h"

namespace blip2::engine {
namespace {

// OPT: byte-level BPE. T5: our unigram implementation over tokenizer.json (no
// libsentencepiece, whose bundled protobuf clashes with gRPC's in one process).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const Blip2Config& c, const std::string& dir) {
  if (c.language_model == LanguageModelKind::kOpt) {
    ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> bpe, BpeTokenizer::Load(dir));
    return std::unique_ptr<Tokenizer>(std::move(bpe));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<UnigramTokenizer> unigram, UnigramTokenizer::Load(dir));
  return std::unique_ptr<Tokenizer>(std::move(unigram));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Blip2Model>> Blip2Model::Load(const EngineOptions& options, bool with_language_model) {
  auto model = std::make_unique<Blip2Model>();
  ASSIGN_OR_RETURN(model->spec, LoadModelSpec(options.model_dir));
  ASSIGN_OR_RETURN(model->device, ParseDevice(options.device));
  ASSIGN_OR_RETURN(model->dtype, ParseComputeDType(options.dtype));
  const Blip2Config& c = model->spec.config;
  if (with_language_model && c.is_retrieval()) {
    return absl::UnimplementedError(
        absl::StrCat(options.model_dir, ": a retrieval checkpoint has no language model to generate text with"));
  }
  if (with_language_model && !c.image_token_index) {
    return absl::InvalidArgumentError(absl::StrCat(options.model_dir, "/config.json: image_token_index is required"));
  }
  if (with_language_model) {
    ASSIGN_OR_RETURN(model->tokenizer, LoadTokenizer(c, options.model_dir));
  }
  ASSIGN_OR_RETURN(const LinearWeights lm_linears, ParseQuantization(options.quantization));
  if (lm_linears == LinearWeights::kInt8) {
    if (!with_language_model || c.is_retrieval()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quantization \"int8\" applies to the language model, and ", options.model_dir,
          c.is_retrieval() ? " is a retrieval checkpoint (it has none)" : " is loaded without it"));
    }
    RETURN_IF_ERROR(CheckInt8Supported(model->device, model->dtype));
    // T5's feed-forward output runs in float32 under float16 (below).
    if (model->dtype == at::kHalf) RETURN_IF_ERROR(CheckInt8Supported(model->device, at::kFloat));
  }
  ASSIGN_OR_RETURN(model->checkpoint, Checkpoint::Open(options.model_dir));
  const auto start = std::chrono::steady_clock::now();
  try {
    c10::InferenceMode guard;
    WeightLoader weights(*model->checkpoint, model->device);
    const WeightLoader lm_weights(*model->checkpoint, model->device, lm_linears);
    ASSIGN_OR_RETURN(ImagePath path, ImagePath::Load(weights, c, model->dtype));
    model->image_path.emplace(std::move(path));
    if (c.is_retrieval() && c.qformer.use_qformer_text_input) {
      ASSIGN_OR_RETURN(RetrievalHeads heads, RetrievalHeads::Load(weights, c, model->dtype));
      model->retrieval.emplace(std::move(heads));
    }
    if (with_language_model && c.language_model == LanguageModelKind::kOpt) {
      ASSIGN_OR_RETURN(OptDecoder opt, OptDecoder::Load(lm_weights, c.opt, c.image_token_index, model->dtype));
      model->opt.emplace(std::move(opt));
    } else if (with_language_model) {
      ASSIGN_OR_RETURN(T5Model t5, T5Model::Load(lm_weights, c.t5, c.image_token_index, model->dtype));
      model->t5.emplace(std::move(t5));
    }
  } catch (const std::exception& e) {
    return StatusFromException(e, absl::StrCat("loading ", options.model_dir));
  }
  // Every weight is copied out; the mapping would only keep file pages resident.
  model->checkpoint.reset();
#ifdef __GLIBC__
  // Loading freed a float32 copy of every quantized layer and every converted
  // tensor; glibc keeps freed chunks below its mmap threshold (which grows to
  // 32 MB as large blocks come and go) in the heap, resident. Hand them back.
  malloc_trim(0);
#endif
  common::LogInfo("engine", absl::StrFormat(
      "loaded %s (vision %dx%d, Q-Former %dx%d, %d queries%s) on %s in %s%s in %.2f s", options.model_dir,
      c.vision.num_hidden_layers, c.vision.hidden_size, c.qformer.num_hidden_layers, c.qformer.hidden_size,
      c.num_query_tokens,
      !with_language_model ? ""
      : c.language_model == LanguageModelKind::kOpt
          ? absl::StrFormat(", OPT %dx%d", c.opt.num_hidden_layers, c.opt.hidden_size)
          : absl::StrFormat(", T5 %d+%dx%d", c.t5.num_layers, c.t5.num_decoder_layers, c.t5.d_model),
      options.device, options.dtype, lm_linears == LinearWeights::kInt8 ? " (language model int8)" : "",
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

const TextDecoder& Blip2Model::decoder() const {
  if (t5) return *t5;
  return *opt;
}

absl::StatusOr<std::vector<int64_t>> Blip2Model::InputIds(const std::string& prompt, int64_t max_prompt_tokens,
                                                          int64_t max_new_tokens) const {
  if (!IsValidUtf8(prompt)) return absl::InvalidArgumentError("prompt is not valid UTF-8");
  ASSIGN_OR_RETURN(std::vector<int64_t> text_ids, tokenizer->Encode(prompt));
  if (static_cast<int64_t>(text_ids.size()) > max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt has ", text_ids.size(), " tokens; the limit is ",
                                                   max_prompt_tokens, " (max_prompt_tokens)"));
  }
  const int64_t image_token = *spec.config.image_token_index;
  if (std::count(text_ids.begin(), text_ids.end(), image_token) > 0) {
    return absl::InvalidArgumentError("prompt must not contain the <image> token");
  }
  std::vector<int64_t> ids(spec.processor_num_query_tokens, image_token);
  ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  if (opt) {
    const int64_t max_positions = spec.config.opt.max_position_embeddings;
    if (static_cast<int64_t>(ids.size()) + max_new_tokens > max_positions) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt of ", ids.size(), " tokens (", spec.processor_num_query_tokens,
          " of them image tokens) plus max_new_tokens ", max_new_tokens, " exceeds the model's ", max_positions,
          " positions (max_position_embeddings)"));
    }
  }
  return ids;
}

int64_t Blip2Model::MaxDecoderTokens(int64_t max_new_tokens) const {
  return t5 ? 1 + max_new_tokens : spec.config.opt.max_position_embeddings;
}

std::vector<DecoderInput> Blip2Model::FirstSteps(const std::vector<EncoderInput>& requests) const {
  std::vector<DecoderInput> steps(requests.size());
  if (!t5) {
    for (size_t i = 0; i < requests.size(); ++i) {
      steps[i].token_ids = requests[i].token_ids;
      steps[i].image_embeds = requests[i].image_embeds;
    }
    return steps;
  }
  const std::vector<at::Tensor> states = t5->Encode(requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    steps[i].token_ids = {spec.generation.decoder_start_token_id.value_or(spec.config.t5.decoder_start_token_id)};
    steps[i].cross = t5->CrossAttention(states[i]);
  }
  return steps;
}

}  // namespace blip2::engine
