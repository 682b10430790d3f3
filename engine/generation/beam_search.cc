#include "engine/generation/beam_search.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "engine/generation/logits_processors.h"

namespace blip2::engine {
namespace {

// transformers' "impossible" score.
constexpr float kNeverScore = -1.0e9f;

bool IsEos(const GenerationParams& p, int64_t token) {
  return std::find(p.eos_token_ids.begin(), p.eos_token_ids.end(), token) != p.eos_token_ids.end();
}

}  // namespace

BeamSearch::BeamSearch(const GenerationParams& params, std::vector<int64_t> prompt_ids)
    : p_(params),
      prompt_ids_(std::move(prompt_ids)),
      beams_(params.num_beams),
      n_eos_(static_cast<int64_t>(params.eos_token_ids.size())),
      keep_(std::max<int64_t>(2, 1 + n_eos_) * beams_),
      running_(beams_),
      running_scores_(beams_, kNeverScore),
      finished_(beams_),
      is_finished_(beams_, false) {
  running_scores_[0] = 0;  // only beam 0 is live at first, so no duplicates
  for (auto& h : finished_) h.score = kNeverScore;
  if (p_.do_sample) rng_ = at::detail::createCPUGenerator(p_.seed);
}

std::optional<BeamSearch::Next> BeamSearch::Step(const at::Tensor& logits) {
  const int64_t vocab = logits.size(1);
  // Scores of every continuation: log-softmax, processors, plus the beam's score.
  at::Tensor scores = logits.log_softmax(-1);
  std::vector<std::vector<int64_t>> histories(beams_, prompt_ids_);
  std::vector<RowContext> rows;
  for (int64_t b = 0; b < beams_; ++b) {
    histories[b].insert(histories[b].end(), running_[b].begin(), running_[b].end());
    rows.push_back({&p_, &histories[b], step_});
  }
  ProcessRows(scores, rows, n_eos_ + 1);
  scores = (scores + at::tensor(running_scores_).to(scores.device()).unsqueeze(1)).reshape({-1});
  at::Tensor top_scores, top_index;
  if (p_.do_sample) {
    top_index = at::multinomial(scores.softmax(0).to(at::kCPU), keep_, false, *rng_);
    top_scores = scores.to(at::kCPU).gather(0, top_index);
  } else {
    std::tie(top_scores, top_index) = scores.topk(keep_);
  }
  top_scores = top_scores.to(at::kCPU).contiguous();
  top_index = top_index.to(at::kCPU).contiguous();
  const float* cand_score = top_scores.data_ptr<float>();
  const int64_t* cand_index = top_index.data_ptr<int64_t>();
  const int64_t generated = step_ + 1;  // new tokens in each candidate
  std::vector<int64_t> cand_beam(keep_), cand_token(keep_);
  std::vector<bool> hits(keep_);
  for (int64_t k = 0; k < keep_; ++k) {
    cand_beam[k] = cand_index[k] / vocab;
    cand_token[k] = cand_index[k] % vocab;
    hits[k] = IsEos(p_, cand_token[k]) || generated >= p_.max_new_tokens;
  }
  auto candidate_tokens = [&](int64_t k) {
    std::vector<int64_t> t = running_[cand_beam[k]];
    t.push_back(cand_token[k]);
    return t;
  };

  // Next running beams: the best candidates that did not stop.
  std::vector<float> live_scores(keep_);
  for (int64_t k = 0; k < keep_; ++k) live_scores[k] = cand_score[k] + (hits[k] ? kNeverScore : 0.0f);
  const at::Tensor next = std::get<1>(at::tensor(live_scores).topk(beams_)).contiguous();
  std::vector<std::vector<int64_t>> next_running(beams_);
  Next step;
  for (int64_t b = 0; b < beams_; ++b) {
    const int64_t k = next.data_ptr<int64_t>()[b];
    next_running[b] = candidate_tokens(k);
    running_scores_[b] = live_scores[k];
    step.sources.push_back(cand_beam[k]);
    step.tokens.push_back(cand_token[k]);
  }

  // Finished hypotheses: stopped candidates among the first `beams`, scored
  // sum / generated^length_penalty, merged with the ones kept so far.
  const bool all_finished = std::all_of(is_finished_.begin(), is_finished_.end(), [](bool f) { return f; });
  const float norm = static_cast<float>(std::pow(static_cast<double>(generated), p_.length_penalty));
  std::vector<float> merged_scores;
  for (const auto& h : finished_) merged_scores.push_back(h.score);
  for (int64_t k = 0; k < keep_; ++k) {
    float s = cand_score[k] / norm;
    if (all_finished && p_.early_stopping == EarlyStopping::kTrue) s += kNeverScore;
    if (!improvement_possible_) s += kNeverScore;
    if (!(hits[k] && k < beams_)) s += kNeverScore;
    merged_scores.push_back(s);
  }
  const at::Tensor best = std::get<1>(at::tensor(merged_scores).topk(beams_)).contiguous();
  std::vector<Hypothesis> next_finished(beams_);
  std::vector<bool> next_is_finished(beams_);
  for (int64_t b = 0; b < beams_; ++b) {
    const int64_t m = best.data_ptr<int64_t>()[b];
    if (m < beams_) {
      next_finished[b] = finished_[m];
      next_is_finished[b] = is_finished_[m];
    } else {
      const int64_t k = m - beams_;
      next_finished[b].tokens = candidate_tokens(k);
      next_finished[b].reason = IsEos(p_, cand_token[k]) ? FinishReason::kEos : FinishReason::kLength;
      next_is_finished[b] = hits[k] && k < beams_;
    }
    next_finished[b].score = merged_scores[m];
  }
  finished_ = std::move(next_finished);
  is_finished_ = std::move(next_is_finished);
  running_ = std::move(next_running);
  ++step_;

  // Could a running beam still beat the worst finished one?
  const int64_t best_len =
      (p_.early_stopping == EarlyStopping::kNever && p_.length_penalty > 0) ? p_.max_new_tokens : generated;
  const float best_possible =
      running_scores_[0] / static_cast<float>(std::pow(static_cast<double>(best_len), p_.length_penalty));
  const bool now_all_finished = std::all_of(is_finished_.begin(), is_finished_.end(), [](bool f) { return f; });
  float worst = finished_[0].score;
  for (const auto& h : finished_) worst = std::min(worst, h.score);
  improvement_possible_ = improvement_possible_ && (!now_all_finished || best_possible > worst);
  const bool every_candidate_stopped = std::all_of(hits.begin(), hits.end(), [](bool h) { return h; });
  if (!improvement_possible_ || (now_all_finished && p_.early_stopping == EarlyStopping::kTrue) ||
      every_candidate_stopped) {
    return std::nullopt;
  }
  return step;
}

std::vector<Hypothesis> BeamSearch::Results() const {
  std::vector<Hypothesis> out(finished_.begin(), finished_.begin() + std::min<int64_t>(p_.num_return_sequences, beams_));
  return out;
}

}  // namespace blip2::engine
