// One request's decoding loop over a decoder (OPT or T5) and a KV cache of its
// own: greedy, sampling and beam search with transformers' semantics, through
// the same sampler and beam bookkeeping as the serving engine (which runs
// every request as scheduler sequences instead). For the command line, the
// Captioner and the parity tests. Internal (ATen).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/ATen.h>

#include "engine/generation/beam_search.h"
#include "engine/generation/generation_params.h"
#include "engine/model/text_decoder.h"

namespace blip2::engine {

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

// Runs one request. `prompt` is its first step's input: OPT, the prompt ids
// with the image embeddings for their <image> placeholders; T5, the decoder
// start token with the request's cross-attention keys and values. Its token
// ids also begin the history the logits processors see (transformers' input
// ids: the OPT prompt, or T5's decoder ids). Returns num_return_sequences
// hypotheses, best first.
std::vector<Hypothesis> Generate(const TextDecoder& decoder, const DecoderInput& prompt,
                                 const GenerationParams& params, const GenerationHooks& hooks = {});

}  // namespace blip2::engine
