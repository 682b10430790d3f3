// A generated token's log-probability, as the API returns it. Torch-free.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace blip2::engine {

// A generated token's log-probability and its step's most likely tokens,
// from the log-softmax of the model's raw logits: before temperature,
// penalties or truncation, so it says what the model thinks of the token
// whichever way it was picked (vLLM's default "raw" log-probabilities).
struct TokenLogprob {
  int64_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int64_t, float>> top;  // (token, logprob), most likely first
};

}  // namespace blip2::engine
