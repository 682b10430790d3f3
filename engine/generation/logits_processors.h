// transformers' logits processors, in the order transformers applies them:
// repetition penalty, no-repeat n-gram, min_new_tokens, then (when sampling)
// temperature, top-k, top-p. Batched: rows that share a setting are processed
// by one tensor operation, so the cost per step grows with the number of
// distinct settings, not of rows. Internal (ATen).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "engine/generation/generation_params.h"

namespace blip2::engine {

// What the processors need to know about one row of scores.
struct RowContext {
  const GenerationParams* params = nullptr;
  // The whole sequence so far (prompt and <image> ids included, as
  // transformers passes input_ids); read only by the repetition penalty and
  // the no-repeat n-gram processor.
  const std::vector<int64_t>* history = nullptr;
  int64_t generated = 0;  // new tokens in the history
};

// Applies each row's processors to `scores` ([R, V] float32, modified in
// place); rows.size() == R. `min_tokens_to_keep` is 1 for sampling, n_eos + 1
// for beam sampling.
void ProcessRows(at::Tensor& scores, const std::vector<RowContext>& rows, int64_t min_tokens_to_keep);

// One row ([V]); the same as ProcessRows on a batch of one.
void ProcessScores(at::Tensor& scores, const std::vector<int64_t>& history, int64_t generated,
                   const GenerationParams& params, int64_t min_tokens_to_keep);

// Token ids that would repeat an n-gram of `history` (exposed for tests).
std::vector<int64_t> BannedNgramTokens(const std::vector<int64_t>& history, int64_t n);

}  // namespace blip2::engine
