// transformers' logits processors, one sequence (one row of scores) at a time,
// in the order transformers applies them: repetition penalty, no-repeat n-gram,
// min_new_tokens, then (when sampling) temperature, top-k, top-p. Internal (ATen).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "engine/generation_params.h"

namespace blip2::engine {

// Applies the processors to `scores` ([V] float32, modified in place).
// `history` is the whole sequence so far (prompt and <image> ids included, as
// transformers passes input_ids); `generated` counts the new tokens in it.
// `min_tokens_to_keep` is 1 for sampling, n_eos + 1 for beam sampling.
void ProcessScores(at::Tensor& scores, const std::vector<int64_t>& history, int64_t generated,
                   const GenerationParams& params, int64_t min_tokens_to_keep);

// Token ids that would repeat an n-gram of `history` (exposed for tests).
std::vector<int64_t> BannedNgramTokens(const std::vector<int64_t>& history, int64_t n);

}  // namespace blip2::engine
