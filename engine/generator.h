// One request's decoding loop over the OPT decoder and its KV cache: greedy,
// sampling and beam search with transformers' semantics. Internal (ATen).
// The continuous batcher of [C] will drive the same pieces step by step.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/ATen.h>

#include "engine/generation_params.h"
#include "engine/opt_decoder.h"

namespace blip2::engine {

enum class FinishReason { kEos, kLength, kStop };

struct Hypothesis {
  std::vector<int64_t> tokens;  // new tokens only; ends with the stop id when one ended it
  FinishReason reason = FinishReason::kLength;
  float score = 0;  // beam search: length-normalised log-probability
};

// Called with each new token of a greedy or sampled sequence; returning true
// ends that sequence (stop strings).
using TokenObserver = std::function<bool(int64_t sequence, int64_t token, const std::vector<int64_t>& generated)>;

// Called with the raw float32 logits [live sequences, V] of every greedy or
// sampling step, before any processing (for parity tests and scoring).
using LogitsObserver = std::function<void(const at::Tensor& logits)>;

struct GenerationHooks {
  TokenObserver on_token;
  LogitsObserver on_logits;
};

// Runs one request. `image_embeds` [Q, D] fills the <image> placeholders of
// `prompt_ids`. Returns num_return_sequences hypotheses, best first.
std::vector<Hypothesis> Generate(const OptDecoder& decoder, const at::Tensor& image_embeds,
                                 const std::vector<int64_t>& prompt_ids, const GenerationParams& params,
                                 const GenerationHooks& hooks = {});

}  // namespace blip2::engine
