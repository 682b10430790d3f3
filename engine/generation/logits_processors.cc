#include "engine/generation/logits_processors.h"

#include <algorithm>
#include <limits>
#include <map>

namespace blip2::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

at::Tensor LongTensor(const std::vector<int64_t>& v, const at::Device& device) {
  return at::tensor(v, at::kLong).to(device);
}

// Rows grouped by one setting's value; rows whose value is `off` are left out.
template <typename T, typename Get>
std::map<T, std::vector<int64_t>> GroupRows(const std::vector<RowContext>& rows, Get get, T off) {
  std::map<T, std::vector<int64_t>> groups;
  for (size_t r = 0; r < rows.size(); ++r) {
    const T value = get(*rows[r].params);
    if (value != off) groups[value].push_back(static_cast<int64_t>(r));
  }
  return groups;
}

// Runs `op` on the rows `index` of `scores` as one [G, V] tensor and writes
// them back (a no-copy view when the group is every row).
template <typename Op>
void OnRows(at::Tensor& scores, const std::vector<int64_t>& index, Op op) {
  if (static_cast<int64_t>(index.size()) == scores.size(0)) {
    op(scores);
    return;
  }
  const at::Tensor rows = LongTensor(index, scores.device());
  at::Tensor sub = scores.index_select(0, rows);
  op(sub);
  scores.index_copy_(0, rows, sub);
}

void RepetitionPenalty(at::Tensor& scores, const std::vector<RowContext>& rows) {
  const int64_t vocab = scores.size(1);
  for (const auto& [penalty, index] : GroupRows<double>(rows, [](const GenerationParams& p) { return p.repetition_penalty; }, 1.0)) {
    // [G, L] ids of each row's history, padded with a repeat of its own first
    // id (scattering one value twice is harmless).
    std::vector<std::vector<int64_t>> ids;
    size_t longest = 0;
    for (int64_t r : index) {
      std::vector<int64_t> row;
      if (rows[r].history != nullptr) {
        for (int64_t id : *rows[r].history) {
          if (id >= 0 && id < vocab) row.push_back(id);
        }
      }
      longest = std::max(longest, row.size());
      ids.push_back(std::move(row));
    }
    if (longest == 0) continue;
    std::vector<int64_t> flat;
    std::vector<int64_t> kept;  // rows with a history
    for (size_t g = 0; g < ids.size(); ++g) {
      if (ids[g].empty()) continue;
      kept.push_back(index[g]);
      ids[g].resize(longest, ids[g][0]);
      flat.insert(flat.end(), ids[g].begin(), ids[g].end());
    }
    const at::Tensor gather =
        LongTensor(flat, scores.device()).view({static_cast<int64_t>(kept.size()), static_cast<int64_t>(longest)});
    OnRows(scores, kept, [&](at::Tensor& sub) {
      const at::Tensor picked = sub.gather(1, gather);
      sub.scatter_(1, gather, at::where(picked < 0, picked * penalty, picked / penalty));
    });
  }
}

// No-repeat n-grams and min_new_tokens: (row, id) pairs set to -inf at once.
void BanTokens(at::Tensor& scores, const std::vector<RowContext>& rows) {
  const int64_t vocab = scores.size(1);
  std::vector<int64_t> ban_rows, ban_ids;
  auto ban = [&](size_t r, int64_t id) {
    if (id < 0 || id >= vocab) return;
    ban_rows.push_back(static_cast<int64_t>(r));
    ban_ids.push_back(id);
  };
  for (size_t r = 0; r < rows.size(); ++r) {
    const GenerationParams& p = *rows[r].params;
    if (p.no_repeat_ngram_size > 0 && rows[r].history != nullptr) {
      for (int64_t id : BannedNgramTokens(*rows[r].history, p.no_repeat_ngram_size)) ban(r, id);
    }
    if (rows[r].generated < p.min_new_tokens) {
      for (int64_t id : p.eos_token_ids) ban(r, id);
    }
  }
  if (ban_rows.empty()) return;
  scores.index_put_({LongTensor(ban_rows, scores.device()), LongTensor(ban_ids, scores.device())},
                    at::scalar_tensor(kNegInf, scores.options()));
}

void Temperature(at::Tensor& scores, const std::vector<RowContext>& sampled) {
  auto get = [](const GenerationParams& p) { return p.do_sample ? p.temperature : 1.0; };
  for (const auto& [temperature, index] : GroupRows<double>(sampled, get, 1.0)) {
    OnRows(scores, index, [&](at::Tensor& sub) { sub.div_(temperature); });
  }
}

void TopK(at::Tensor& scores, const std::vector<RowContext>& rows, int64_t min_tokens_to_keep) {
  const int64_t vocab = scores.size(1);
  auto get = [](const GenerationParams& p) { return p.do_sample ? p.top_k : int64_t{0}; };
  for (const auto& [top_k, index] : GroupRows<int64_t>(rows, get, 0)) {
    const int64_t k = std::min(std::max(top_k, min_tokens_to_keep), vocab);
    OnRows(scores, index, [&](at::Tensor& sub) {
      const at::Tensor kth = std::get<0>(sub.topk(k, /*dim=*/1)).narrow(1, k - 1, 1);
      sub.masked_fill_(sub < kth, kNegInf);
    });
  }
}

void TopP(at::Tensor& scores, const std::vector<RowContext>& rows, int64_t min_tokens_to_keep) {
  const int64_t vocab = scores.size(1);
  auto get = [](const GenerationParams& p) { return p.do_sample ? p.top_p : 1.0; };
  for (const auto& [top_p, index] : GroupRows<double>(rows, get, 1.0)) {
    OnRows(scores, index, [&](at::Tensor& sub) {
      auto [sorted, order] = sub.sort(/*dim=*/1, /*descending=*/false);
      at::Tensor remove = sorted.softmax(1).cumsum(1) <= (1.0 - top_p);
      remove.narrow(1, vocab - min_tokens_to_keep, min_tokens_to_keep).fill_(false);
      sub.masked_fill_(remove.scatter(1, order, remove), kNegInf);
    });
  }
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

void ProcessRows(at::Tensor& scores, const std::vector<RowContext>& rows, int64_t min_tokens_to_keep) {
  if (rows.empty()) return;
  RepetitionPenalty(scores, rows);
  BanTokens(scores, rows);
  Temperature(scores, rows);
  TopK(scores, rows, min_tokens_to_keep);
  TopP(scores, rows, min_tokens_to_keep);
}

void ProcessScores(at::Tensor& scores, const std::vector<int64_t>& history, int64_t generated,
                   const GenerationParams& params, int64_t min_tokens_to_keep) {
  at::Tensor row = scores.unsqueeze(0);  // a view: changes reach `scores`
  ProcessRows(row, {RowContext{&params, &history, generated}}, min_tokens_to_keep);
}

}  // namespace blip2::engine
