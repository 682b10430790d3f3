#include "engine/generator.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "engine/logits_processors.h"

namespace blip2::engine {
namespace {

// transformers' "impossible" score.
constexpr float kNeverScore = -1.0e9f;

bool IsEos(const GenerationParams& p, int64_t token) {
  return std::find(p.eos_token_ids.begin(), p.eos_token_ids.end(), token) != p.eos_token_ids.end();
}

// Prefills slot 0 with the prompt and copies it to slots 1..n-1.
at::Tensor Prefill(const TextDecoder& decoder, KvCache& cache, const DecoderInput& prompt, int64_t n) {
  DecoderInput input = prompt;
  input.blocks = cache.SlotBlocks(0);
  input.cached = 0;
  input.all_logits = false;
  at::Tensor logits = decoder.Step({input}, cache);  // [1, V]
  std::vector<int64_t> targets, sources;
  for (int64_t i = 1; i < n; ++i) {
    targets.push_back(i);
    sources.push_back(0);
  }
  cache.Gather(targets, sources);
  return logits.expand({n, logits.size(1)}).contiguous();
}

int64_t Sample(const at::Tensor& scores, at::Generator& rng) {
  const at::Tensor probs = scores.softmax(0).to(at::kCPU);
  return at::multinomial(probs, 1, /*replacement=*/false, rng).item<int64_t>();
}

// Greedy decoding, or `num_return_sequences` independent samples.
std::vector<Hypothesis> GreedyOrSample(const TextDecoder& decoder, const DecoderInput& prompt,
                                       const GenerationParams& p, const GenerationHooks& hooks) {
  const std::vector<int64_t>& prompt_ids = prompt.token_ids;
  const int64_t n = p.do_sample ? p.num_return_sequences : 1;
  const int64_t prompt_len = static_cast<int64_t>(prompt_ids.size());
  KvCache cache = decoder.MakeSlotCache(n, prompt_len + p.max_new_tokens);
  at::Tensor logits = Prefill(decoder, cache, prompt, n);
  at::Generator rng = at::detail::createCPUGenerator(p.seed);
  std::vector<Hypothesis> out(n);
  std::vector<std::vector<int64_t>> history(n, prompt_ids);
  std::vector<int64_t> alive(n);
  for (int64_t i = 0; i < n; ++i) alive[i] = i;
  for (int64_t step = 0; step < p.max_new_tokens && !alive.empty(); ++step) {
    if (hooks.on_logits) hooks.on_logits(logits);
    std::vector<int64_t> still_alive;
    std::vector<DecoderInput> next;
    for (size_t r = 0; r < alive.size(); ++r) {
      const int64_t s = alive[r];
      at::Tensor scores = logits[static_cast<int64_t>(r)].clone();
      ProcessScores(scores, history[s], step, p, 1);
      const int64_t token = p.do_sample ? Sample(scores, rng) : scores.argmax().item<int64_t>();
      history[s].push_back(token);
      out[s].tokens.push_back(token);
      if (IsEos(p, token)) {
        out[s].reason = FinishReason::kEos;
      } else if (hooks.on_token && hooks.on_token(s, token, out[s].tokens)) {
        out[s].reason = FinishReason::kStop;
      } else if (step + 1 < p.max_new_tokens) {
        still_alive.push_back(s);
        DecoderInput in;
        in.blocks = cache.SlotBlocks(s);
        in.cached = prompt_len + step;
        in.token_ids = {token};
        in.cross = prompt.cross;
        next.push_back(std::move(in));
      }
    }
    alive = std::move(still_alive);
    if (!alive.empty()) logits = decoder.Step(next, cache);
  }
  return out;
}

// Beam search as transformers 5 runs it (see docs/generation.md).
std::vector<Hypothesis> BeamSearch(const TextDecoder& decoder, const DecoderInput& prompt, const GenerationParams& p) {
  const std::vector<int64_t>& prompt_ids = prompt.token_ids;
  const int64_t beams = p.num_beams;
  const int64_t prompt_len = static_cast<int64_t>(prompt_ids.size());
  const int64_t n_eos = static_cast<int64_t>(p.eos_token_ids.size());
  const int64_t keep = std::max<int64_t>(2, 1 + n_eos) * beams;  // candidates per step
  KvCache cache = decoder.MakeSlotCache(beams, prompt_len + p.max_new_tokens);
  at::Tensor logits = Prefill(decoder, cache, prompt, beams);
  const int64_t vocab = logits.size(1);
  at::Generator rng = at::detail::createCPUGenerator(p.seed);

  std::vector<std::vector<int64_t>> running(beams);  // new tokens of each live beam
  std::vector<float> running_scores(beams, kNeverScore);
  running_scores[0] = 0;  // only beam 0 is live at first, so no duplicates
  std::vector<Hypothesis> finished(beams);
  std::vector<bool> is_finished(beams, false);
  for (auto& h : finished) h.score = kNeverScore;
  bool improvement_possible = true;

  for (int64_t step = 0;; ++step) {
    // Scores of every continuation: log-softmax, processors, plus the beam's score.
    at::Tensor scores = logits.log_softmax(-1);
    for (int64_t b = 0; b < beams; ++b) {
      std::vector<int64_t> history(prompt_ids);
      history.insert(history.end(), running[b].begin(), running[b].end());
      at::Tensor row = scores[b];
      ProcessScores(row, history, step, p, n_eos + 1);
    }
    scores = (scores + at::tensor(running_scores).to(scores.device()).unsqueeze(1)).reshape({-1});
    at::Tensor top_scores, top_index;
    if (p.do_sample) {
      top_index = at::multinomial(scores.softmax(0).to(at::kCPU), keep, false, rng);
      top_scores = scores.to(at::kCPU).gather(0, top_index);
    } else {
      std::tie(top_scores, top_index) = scores.topk(keep);
    }
    top_scores = top_scores.to(at::kCPU).contiguous();
    top_index = top_index.to(at::kCPU).contiguous();
    const float* cand_score = top_scores.data_ptr<float>();
    const int64_t* cand_index = top_index.data_ptr<int64_t>();
    const int64_t generated = step + 1;  // new tokens in each candidate
    std::vector<int64_t> cand_beam(keep), cand_token(keep);
    std::vector<bool> hits(keep);
    for (int64_t k = 0; k < keep; ++k) {
      cand_beam[k] = cand_index[k] / vocab;
      cand_token[k] = cand_index[k] % vocab;
      hits[k] = IsEos(p, cand_token[k]) || generated >= p.max_new_tokens;
    }
    auto candidate_tokens = [&](int64_t k) {
      std::vector<int64_t> t = running[cand_beam[k]];
      t.push_back(cand_token[k]);
      return t;
    };

    // Next running beams: the best candidates that did not stop.
    std::vector<float> live_scores(keep);
    for (int64_t k = 0; k < keep; ++k) live_scores[k] = cand_score[k] + (hits[k] ? kNeverScore : 0.0f);
    const at::Tensor next = std::get<1>(at::tensor(live_scores).topk(beams)).contiguous();
    std::vector<std::vector<int64_t>> next_running(beams);
    std::vector<int64_t> sources(beams), targets(beams);
    for (int64_t b = 0; b < beams; ++b) {
      const int64_t k = next.data_ptr<int64_t>()[b];
      next_running[b] = candidate_tokens(k);
      running_scores[b] = live_scores[k];
      sources[b] = cand_beam[k];
      targets[b] = b;
    }

    // Finished hypotheses: stopped candidates among the first `beams`, scored
    // sum / generated^length_penalty, merged with the ones kept so far.
    const bool all_finished = std::all_of(is_finished.begin(), is_finished.end(), [](bool f) { return f; });
    const float norm = static_cast<float>(std::pow(static_cast<double>(generated), p.length_penalty));
    std::vector<float> merged_scores;
    for (const auto& h : finished) merged_scores.push_back(h.score);
    for (int64_t k = 0; k < keep; ++k) {
      float s = cand_score[k] / norm;
      if (all_finished && p.early_stopping == EarlyStopping::kTrue) s += kNeverScore;
      if (!improvement_possible) s += kNeverScore;
      if (!(hits[k] && k < beams)) s += kNeverScore;
      merged_scores.push_back(s);
    }
    const at::Tensor best = std::get<1>(at::tensor(merged_scores).topk(beams)).contiguous();
    std::vector<Hypothesis> next_finished(beams);
    std::vector<bool> next_is_finished(beams);
    for (int64_t b = 0; b < beams; ++b) {
      const int64_t m = best.data_ptr<int64_t>()[b];
      if (m < beams) {
        next_finished[b] = finished[m];
        next_is_finished[b] = is_finished[m];
      } else {
        const int64_t k = m - beams;
        next_finished[b].tokens = candidate_tokens(k);
        next_finished[b].reason = IsEos(p, cand_token[k]) ? FinishReason::kEos : FinishReason::kLength;
        next_is_finished[b] = hits[k] && k < beams;
      }
      next_finished[b].score = merged_scores[m];
    }
    finished = std::move(next_finished);
    is_finished = std::move(next_is_finished);
    running = std::move(next_running);

    // Could a running beam still beat the worst finished one?
    const int64_t best_len =
        (p.early_stopping == EarlyStopping::kNever && p.length_penalty > 0) ? p.max_new_tokens : generated;
    const float best_possible =
        running_scores[0] / static_cast<float>(std::pow(static_cast<double>(best_len), p.length_penalty));
    const bool now_all_finished = std::all_of(is_finished.begin(), is_finished.end(), [](bool f) { return f; });
    float worst = finished[0].score;
    for (const auto& h : finished) worst = std::min(worst, h.score);
    improvement_possible = improvement_possible && (!now_all_finished || best_possible > worst);
    const bool every_candidate_stopped = std::all_of(hits.begin(), hits.end(), [](bool h) { return h; });
    if (!improvement_possible || (now_all_finished && p.early_stopping == EarlyStopping::kTrue) ||
        every_candidate_stopped) {
      break;
    }
    // Continue the running beams: reorder the cache, then one decode step.
    cache.Gather(targets, sources);
    std::vector<DecoderInput> inputs(beams);
    for (int64_t b = 0; b < beams; ++b) {
      inputs[b].blocks = cache.SlotBlocks(b);
      inputs[b].cached = prompt_len + step;
      inputs[b].token_ids = {running[b].back()};
      inputs[b].cross = prompt.cross;
    }
    logits = decoder.Step(inputs, cache);
  }
  finished.resize(p.num_return_sequences);
  return finished;
}

}  // namespace

std::vector<Hypothesis> Generate(const TextDecoder& decoder, const DecoderInput& prompt,
                                 const GenerationParams& params, const GenerationHooks& hooks) {
  if (params.num_beams > 1) return BeamSearch(decoder, prompt, params);
  return GreedyOrSample(decoder, prompt, params, hooks);
}

}  // namespace blip2::engine
