#include "engine/generation/generator.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "engine/generation/sampler.h"

namespace blip2::engine {
namespace {

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
    std::vector<SampleRow> rows;
    for (size_t r = 0; r < alive.size(); ++r) {
      rows.push_back({static_cast<int64_t>(r), RowContext{&p, &history[alive[r]], step}, &rng});
    }
    const std::vector<int64_t> tokens = SampleTokens(logits, rows);
    std::vector<int64_t> still_alive;
    std::vector<DecoderInput> next;
    for (size_t r = 0; r < alive.size(); ++r) {
      const int64_t s = alive[r];
      const int64_t token = tokens[r];
      history[s].push_back(token);
      out[s].tokens.push_back(token);
      if (IsEos(p, token)) {
        out[s].reason = FinishReason::kEos;
      } else if (hooks.on_token && hooks.on_token(s, token, out[s].tokens)) {
        out[s].reason = FinishReason::kStopString;
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

// Beam search: every beam a slot of the cache, reordered after each step.
std::vector<Hypothesis> RunBeamSearch(const TextDecoder& decoder, const DecoderInput& prompt,
                                      const GenerationParams& p) {
  const int64_t prompt_len = static_cast<int64_t>(prompt.token_ids.size());
  BeamSearch search(p, prompt.token_ids);
  const int64_t beams = search.beams();
  KvCache cache = decoder.MakeSlotCache(beams, prompt_len + p.max_new_tokens);
  at::Tensor logits = Prefill(decoder, cache, prompt, beams);
  for (int64_t step = 0;; ++step) {
    const std::optional<BeamSearch::Next> next = search.Step(logits);
    if (!next) break;
    std::vector<int64_t> targets(beams);
    for (int64_t b = 0; b < beams; ++b) targets[b] = b;
    cache.Gather(targets, next->sources);
    std::vector<DecoderInput> inputs(beams);
    for (int64_t b = 0; b < beams; ++b) {
      inputs[b].blocks = cache.SlotBlocks(b);
      inputs[b].cached = prompt_len + step;
      inputs[b].token_ids = {next->tokens[b]};
      inputs[b].cross = prompt.cross;
    }
    logits = decoder.Step(inputs, cache);
  }
  return search.Results();
}

}  // namespace

std::vector<Hypothesis> Generate(const TextDecoder& decoder, const DecoderInput& prompt,
                                 const GenerationParams& params, const GenerationHooks& hooks) {
  if (params.num_beams > 1) return RunBeamSearch(decoder, prompt, params);
  return GreedyOrSample(decoder, prompt, params, hooks);
}

}  // namespace blip2::engine
