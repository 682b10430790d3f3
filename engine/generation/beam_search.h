// One request's beam search bookkeeping, as transformers 5 runs it (see
// docs/generation.md): scores, candidates, finished hypotheses, length
// penalty, early stopping. No model and no cache here: each step takes the
// logits of the live beams and says which beam each next beam continues
// (`sources`) with which token, or that the search is over. The offline
// generator and the serving engine (where beams are scheduler sequences over
// shared KV blocks) both drive it. Internal (ATen). One thread.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "engine/generation/finish_reason.h"
#include "engine/generation/generation_params.h"

namespace blip2::engine {

struct Hypothesis {
  std::vector<int64_t> tokens;  // new tokens only; ends with the stop id when one ended it
  FinishReason reason = FinishReason::kLength;
  float score = 0;  // beam search: length-normalised log-probability
};

class BeamSearch {
 public:
  // `prompt_ids` begin the history the logits processors see.
  BeamSearch(const GenerationParams& params, std::vector<int64_t> prompt_ids);

  int64_t beams() const { return beams_; }
  // New tokens of running beam b (its last one not yet in the KV cache).
  const std::vector<int64_t>& running(int64_t b) const { return running_[static_cast<size_t>(b)]; }

  struct Next {
    std::vector<int64_t> sources;  // next beam b continues current beam sources[b]
    std::vector<int64_t> tokens;   // with this token
  };
  // One step: `logits` [beams, V] float32, row b from beam b (at the first
  // step every row is the prompt's). nullopt when the search is over.
  std::optional<Next> Step(const at::Tensor& logits);
  // The best num_return_sequences hypotheses, best first (after Step returned nullopt).
  std::vector<Hypothesis> Results() const;

 private:
  GenerationParams p_;
  std::vector<int64_t> prompt_ids_;
  int64_t beams_;
  int64_t n_eos_;
  int64_t keep_;  // candidates per step
  int64_t step_ = 0;
  std::optional<at::Generator> rng_;  // beam sampling
  std::vector<std::vector<int64_t>> running_;
  std::vector<float> running_scores_;
  std::vector<Hypothesis> finished_;
  std::vector<bool> is_finished_;
  bool improvement_possible_ = true;
};

}  // namespace blip2::engine
