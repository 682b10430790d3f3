#include "engine/logits_processors.h"

#include <algorithm>
#include <limits>

namespace blip2::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void IndexFill(at::Tensor& scores, std::vector<int64_t> ids) {
  const int64_t vocab = scores.size(0);
  std::erase_if(ids, [&](int64_t id) { return id < 0 || id >= vocab; });
  if (ids.empty()) return;
  scores.index_fill_(0, at::tensor(ids, at::kLong).to(scores.device()), kNegInf);
}

}  // namespace

std::vector<int64_t> BannedNgramTokens(const std::vector<int64_t>& history, int64_t n) {
  std::vector<int64_t> banned;
  const int64_t len = static_cast<int64_t>(history.size());
  if (n <= 0 || len + 1 < n) return banned;
  // The last n-1 tokens, followed by t, must not form an n-gram seen before.
  const int64_t prefix_start = len - (n - 1);
  for (int64_t i = 0; i + n <= len; ++i) {
    if (std::equal(history.begin() + i, history.begin() + i + n - 1, history.begin() + prefix_start)) {
      banned.push_back(history[i + n - 1]);
    }
  }
  return banned;
}

void ProcessScores(at::Tensor& scores, const std::vector<int64_t>& history, int64_t generated,
                   const GenerationParams& p, int64_t min_tokens_to_keep) {
  const int64_t vocab = scores.size(0);
  if (p.repetition_penalty != 1.0 && !history.empty()) {
    std::vector<int64_t> ids(history);
    std::erase_if(ids, [&](int64_t id) { return id < 0 || id >= vocab; });
    const at::Tensor index = at::tensor(ids, at::kLong).to(scores.device());
    const at::Tensor picked = scores.gather(0, index);
    const at::Tensor penalised =
        at::where(picked < 0, picked * p.repetition_penalty, picked / p.repetition_penalty);
    scores.scatter_(0, index, penalised);
  }
  if (p.no_repeat_ngram_size > 0) IndexFill(scores, BannedNgramTokens(history, p.no_repeat_ngram_size));
  if (generated < p.min_new_tokens) IndexFill(scores, p.eos_token_ids);
  if (!p.do_sample) return;
  if (p.temperature != 1.0) scores.div_(p.temperature);
  if (p.top_k != 0) {
    const int64_t k = std::min(std::max(p.top_k, min_tokens_to_keep), vocab);
    const at::Tensor kth = std::get<0>(scores.topk(k)).select(0, k - 1);
    scores.masked_fill_(scores < kth, kNegInf);
  }
  if (p.top_p < 1.0) {
    auto [sorted, order] = scores.sort(/*dim=*/0, /*descending=*/false);
    at::Tensor remove = sorted.softmax(0).cumsum(0) <= (1.0 - p.top_p);
    remove.narrow(0, vocab - min_tokens_to_keep, min_tokens_to_keep).fill_(false);
    scores.masked_fill_(remove.scatter(0, order, remove), kNegInf);
  }
}

}  // namespace blip2::engine
