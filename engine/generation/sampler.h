// The batched sampler: one token for each row of a decoder step's logits, as
// transformers' generate picks it (logits processors, then greedy argmax or a
// draw). Every row of the step goes through the same few tensor operations;
// only the draws of sampling rows are per row, each from its request's own
// seeded generator (so a request's samples do not depend on its neighbours).
// Internal (ATen). Engine thread.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "engine/generation/logits_processors.h"
#include "engine/generation/token_logprob.h"

namespace blip2::engine {

struct SampleRow {
  int64_t logits_row = 0;  // which row of the step's logits (rows may repeat: forks)
  RowContext context;
  at::Generator* rng = nullptr;  // when context.params->do_sample
};

// `logits`: [N, V] float32; the processors may change it in place (the caller
// is done with it). Returns one id per row, on the host, in `rows` order;
// draws happen in that order. With `logprobs`, it gets one entry per row:
// filled for rows whose params ask for log-probabilities, empty otherwise.
std::vector<int64_t> SampleTokens(at::Tensor& logits, const std::vector<SampleRow>& rows,
                                  std::vector<TokenLogprob>* logprobs = nullptr);

// Whether a row needs more than an argmax (processors or a draw).
bool NeedsProcessing(const RowContext& row);

}  // namespace blip2::engine
