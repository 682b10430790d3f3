// A loaded BLIP-2 checkpoint: its specs, the image path and (for captioning
// checkpoints) the language model, OPT or Flan-T5, with what every caller of
// it shares: the tokenizer, the prompt layout and its checks, and each
// request's first decoder step. Internal (ATen); the torch-free faces are
// image_encoder.h, captioner.h and engine.h.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/image_encoder.h"
#include "engine/model/image_path.h"
#include "engine/model/model_config.h"
#include "engine/model/opt_decoder.h"
#include "engine/model/retrieval_heads.h"
#include "engine/model/t5_model.h"
#include "engine/model/text_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/model/safetensors.h"

namespace blip2::engine {

struct Blip2Model {
  ModelSpec spec;
  std::unique_ptr<Checkpoint> checkpoint;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  std::optional<ImagePath> image_path;
  // When loaded with the language model: one of these, and its tokenizer.
  std::optional<OptDecoder> opt;
  std::optional<T5Model> t5;
  std::unique_ptr<Tokenizer> tokenizer;
  // Retrieval checkpoints: the text side of ITC and ITM.
  std::optional<RetrievalHeads> retrieval;

  // Statuses name the file, tensor or field at fault. UNIMPLEMENTED asking for
  // the language model of a retrieval checkpoint (it has none).
  static absl::StatusOr<std::unique_ptr<Blip2Model>> Load(const EngineOptions& options, bool with_language_model);

  const TextDecoder& decoder() const;
  bool is_t5() const { return t5.has_value(); }

  // The language model's input for a prompt, as Blip2Processor lays it out:
  // num_query_tokens <image> ids, then the tokenized prompt (OPT: </s> first;
  // T5: </s> last). INVALID_ARGUMENT for invalid UTF-8, an <image> token in
  // the prompt, more than `max_prompt_tokens` text tokens, or (OPT) a prompt
  // that with max_new_tokens passes max_position_embeddings.
  absl::StatusOr<std::vector<int64_t>> InputIds(const std::string& prompt, int64_t max_prompt_tokens,
                                                int64_t max_new_tokens) const;
  // The longest sequence the decoder's KV cache holds for one request: OPT,
  // the model's positions; T5, the start token plus max_new_tokens.
  int64_t MaxDecoderTokens(int64_t max_new_tokens) const;

  // Each request's first decoder step (see generator.h): OPT, its input ids
  // with its image embeddings; T5, the start token with cross-attention keys
  // and values from one encoder forward over all the requests.
  std::vector<DecoderInput> FirstSteps(const std::vector<EncoderInput>& requests) const;

  // pixels: preprocessed images, each [C, H, W]. Returns [B, C, H, W] on the device.
  at::Tensor PixelBatch(const std::vector<std::vector<float>>& images) const;
  // The same without copying the callers' vectors first.
  at::Tensor PixelBatch(const std::vector<const std::vector<float>*>& images) const;
};

}  // namespace blip2::engine
