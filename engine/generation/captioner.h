// Captions and answers for one image, one request at a time: the torch-free
// face for text generation with an OPT or Flan-T5 checkpoint (image path,
// tokenizer, KV-cache decoder, every decoding strategy). Callers include only
// this header; the serving engine (engine.h) batches the same pieces.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/generation/finish_reason.h"
#include "engine/generation/generation_params.h"
#include "engine/generation/token_logprob.h"
#include "engine/model/image_encoder.h"
#include "engine/model/model_config.h"
#include "engine/tokenizer/tokenizer.h"

namespace blip2::engine {

struct CaptionRequest {
  std::vector<float> pixels;  // one preprocessed image, [C, H, W] float32
  std::string prompt;         // "" captions; QuestionPrompt(q) asks a question
  GenerationOverrides overrides;
};

struct GeneratedSequence {
  // New ids as transformers returns them: the stop id included when one ended
  // the sequence, no padding.
  std::vector<int64_t> token_ids;
  // Decoded without special tokens, without the stop token, and cut before a
  // stop string when one ended it.
  std::string text;
  FinishReason finish_reason = FinishReason::kLength;
  // One per token id when the request asked for log-probabilities.
  std::vector<TokenLogprob> logprobs;
};

struct CaptionResult {
  std::vector<GeneratedSequence> sequences;  // best first
  int64_t prompt_tokens = 0;                  // <image> placeholders included
};

// Receives text as it is produced (the first sequence of greedy or sampled
// decoding; beam search delivers its text at the end). The pieces concatenated
// equal sequences[0].text.
using TextSink = std::function<void(const std::string& text)>;

class Captioner {
 public:
  static absl::StatusOr<std::unique_ptr<Captioner>> Load(const EngineOptions& options,
                                                         const GenerationLimits& limits = {});
  ~Captioner();

  const ModelSpec& spec() const;
  const Tokenizer& tokenizer() const;
  std::vector<int64_t> pixel_shape() const;

  // The model input for a prompt: num_query_tokens <image> ids, then the
  // tokenized prompt (OPT: BOS first; T5: </s> last), as Blip2Processor lays
  // it out (the T5 encoder's input).
  absl::StatusOr<std::vector<int64_t>> InputIds(const std::string& prompt) const;

  // INVALID_ARGUMENT for bad options (see ResolveGenerationParams), invalid
  // UTF-8, or (OPT) a prompt that with max_new_tokens would pass
  // max_position_embeddings.
  absl::StatusOr<CaptionResult> Generate(const CaptionRequest& request, const TextSink& on_text = nullptr) const;

 private:
  struct Impl;
  explicit Captioner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace blip2::engine
