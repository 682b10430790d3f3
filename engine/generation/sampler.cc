#include "engine/generation/sampler.h"

#include <algorithm>
#include <optional>

namespace blip2::engine {

bool NeedsProcessing(const RowContext& row) {
  const GenerationParams& p = *row.params;
  return p.do_sample || p.repetition_penalty != 1.0 || p.no_repeat_ngram_size > 0 ||
         row.generated < p.min_new_tokens;
}

namespace {

// The raw log-softmax of the rows that ask for log-probabilities (taken
// before the processors change `logits` in place), and their top k.
class RawLogprobs {
 public:
  RawLogprobs(const at::Tensor& logits, const std::vector<SampleRow>& rows) {
    std::vector<int64_t> logits_rows;
    for (size_t r = 0; r < rows.size(); ++r) {
      const int64_t k = rows[r].context.params->logprobs;
      if (k < 0) continue;
      wanted_.push_back(r);
      logits_rows.push_back(rows[r].logits_row);
      max_k_ = std::max(max_k_, std::min<int64_t>(k, logits.size(1)));
    }
    if (wanted_.empty()) return;
    log_probs_ = logits.index_select(0, at::tensor(logits_rows, at::kLong).to(logits.device()))
                     .to(at::kFloat)
                     .log_softmax(-1);
    if (max_k_ > 0) {
      auto [values, indices] = log_probs_.topk(max_k_, -1);
      top_values_ = values.to(at::kCPU).contiguous();
      top_indices_ = indices.to(at::kCPU).contiguous();
    }
  }

  // Fills (*out)[r] for every wanted row r, given the ids picked.
  void Fill(const std::vector<SampleRow>& rows, const std::vector<int64_t>& ids, std::vector<TokenLogprob>* out) const {
    out->assign(rows.size(), {});
    if (wanted_.empty()) return;
    std::vector<int64_t> picked;
    for (size_t r : wanted_) picked.push_back(ids[r]);
    const at::Tensor chosen =
        log_probs_.gather(1, at::tensor(picked, at::kLong).to(log_probs_.device()).unsqueeze(1)).to(at::kCPU).contiguous();
    for (size_t i = 0; i < wanted_.size(); ++i) {
      TokenLogprob& lp = (*out)[wanted_[i]];
      lp.token = picked[i];
      lp.logprob = chosen.data_ptr<float>()[i];
      const int64_t k = std::min<int64_t>(rows[wanted_[i]].context.params->logprobs, max_k_);
      for (int64_t j = 0; j < k; ++j) {
        lp.top.emplace_back(top_indices_.data_ptr<int64_t>()[static_cast<int64_t>(i) * max_k_ + j],
                            top_values_.data_ptr<float>()[static_cast<int64_t>(i) * max_k_ + j]);
      }
    }
  }

 private:
  std::vector<size_t> wanted_;
  int64_t max_k_ = 0;
  at::Tensor log_probs_, top_values_, top_indices_;
};

}  // namespace

std::vector<int64_t> SampleTokens(at::Tensor& logits, const std::vector<SampleRow>& rows,
                                  std::vector<TokenLogprob>* logprobs) {
  if (logprobs != nullptr) logprobs->clear();
  if (rows.empty()) return {};
  std::optional<RawLogprobs> raw;
  if (logprobs != nullptr) raw.emplace(logits, rows);
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
  if (raw) raw->Fill(rows, ids, logprobs);
  return ids;
}

}  // namespace blip2::engine
