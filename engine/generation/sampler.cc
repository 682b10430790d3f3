#include "engine/generation/sampler.h"

namespace blip2::engine {

bool NeedsProcessing(const RowContext& row) {
  const GenerationParams& p = *row.params;
  return p.do_sample || p.repetition_penalty != 1.0 || p.no_repeat_ngram_size > 0 ||
         row.generated < p.min_new_tokens;
}

std::vector<int64_t> SampleTokens(at::Tensor& logits, const std::vector<SampleRow>& rows) {
  if (rows.empty()) return {};
  bool identity = static_cast<int64_t>(rows.size()) == logits.size(0);
  bool process = false;
  std::vector<int64_t> index;
  std::vector<RowContext> contexts;
  std::vector<int64_t> sampled;  // rows that draw
  index.reserve(rows.size());
  contexts.reserve(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    index.push_back(rows[r].logits_row);
    contexts.push_back(rows[r].context);
    identity = identity && rows[r].logits_row == static_cast<int64_t>(r);
    process = process || NeedsProcessing(rows[r].context);
    if (rows[r].context.params->do_sample) sampled.push_back(static_cast<int64_t>(r));
  }
  // Rows in place when each is its own; else (forks reading one row) a copy
  // with one row per sampled sequence.
  at::Tensor scores =
      identity ? logits : logits.index_select(0, at::tensor(index, at::kLong).to(logits.device()));
  if (process) ProcessRows(scores, contexts, /*min_tokens_to_keep=*/1);
  const at::Tensor argmax = scores.argmax(-1).to(at::kCPU).contiguous();
  const int64_t* best = argmax.data_ptr<int64_t>();
  std::vector<int64_t> ids(best, best + rows.size());
  if (!sampled.empty()) {
    const at::Tensor probs =
        scores.index_select(0, at::tensor(sampled, at::kLong).to(scores.device())).softmax(1).to(at::kCPU);
    for (size_t i = 0; i < sampled.size(); ++i) {
      const size_t r = static_cast<size_t>(sampled[i]);
      ids[r] = at::multinomial(probs[static_cast<int64_t>(i)], 1, /*replacement=*/false, *rows[r].rng).item<int64_t>();
    }
  }
  return ids;
}

}  // namespace blip2::engine
