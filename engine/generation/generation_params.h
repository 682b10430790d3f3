// What one generation request asks for, resolved against the checkpoint's
// generation_config.json and validated against the server's limits. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include <nlohmann/json_fwd.hpp>
#include "engine/model/model_config.h"

namespace blip2::engine {

enum class EarlyStopping { kFalse, kTrue, kNever };

// Fields a caller may set; unset ones come from generation_config.json.
struct GenerationOverrides {
  std::optional<int64_t> max_new_tokens;
  std::optional<int64_t> min_new_tokens;
  std::optional<int64_t> num_beams;
  std::optional<double> length_penalty;
  std::optional<EarlyStopping> early_stopping;
  std::optional<int64_t> num_return_sequences;
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  std::optional<uint64_t> seed;
  std::optional<double> repetition_penalty;
  std::optional<int64_t> no_repeat_ngram_size;
  std::optional<std::vector<int64_t>> eos_token_ids;
  std::vector<std::string> stop_strings;
  std::optional<int64_t> logprobs;
};

// Server-side bounds on what a request may ask.
struct GenerationLimits {
  int64_t max_new_tokens = 512;
  int64_t max_num_beams = 8;
  int64_t max_stop_strings = 16;
};

struct GenerationParams {
  int64_t max_new_tokens = 20;
  int64_t min_new_tokens = 0;
  int64_t num_beams = 1;
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::kFalse;
  int64_t num_return_sequences = 1;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;   // 0: off
  double top_p = 1.0;   // 1: off
  uint64_t seed = 0;
  double repetition_penalty = 1.0;
  int64_t no_repeat_ngram_size = 0;
  std::vector<int64_t> eos_token_ids;
  std::vector<std::string> stop_strings;
  // -1: no log-probabilities; k >= 0: every generated token comes with its
  // log-probability and the k most likely tokens of its step.
  int64_t logprobs = -1;
};

// Alternatives a request may ask for per token (OpenAI's top_logprobs bound).
inline constexpr int64_t kMaxTopLogprobs = 20;

// Parses "true", "false" or "never".
absl::StatusOr<EarlyStopping> ParseEarlyStopping(const std::string& text);

// Checkpoint defaults, then overrides, then validation. INVALID_ARGUMENT names
// the bad field: num_beams 0 or above the limit; temperature negative, NaN or
// infinite; top_p outside (0, 1]; top_k negative; max_new_tokens 0 or above the
// limit; and so on. A temperature of 0 means greedy decoding. Without a seed,
// sampling draws one at random.
absl::StatusOr<GenerationParams> ResolveGenerationParams(const GenerationConfig& defaults,
                                                         const GenerationOverrides& overrides,
                                                         const GenerationLimits& limits);

// Sets the override that a transformers `generate` keyword names
// (max_new_tokens, min_new_tokens, num_beams, num_return_sequences,
// length_penalty, early_stopping, temperature, top_p, top_k, seed,
// repetition_penalty, no_repeat_ngram_size, eos_token_id, stop, logprobs). NOT_FOUND for
// any other key; INVALID_ARGUMENT naming the key for a value of the wrong type.
absl::Status ApplyGenerateKwarg(const std::string& key, const nlohmann::json& value, GenerationOverrides* o);

// The prompt the released checkpoints were tuned with for a question.
std::string QuestionPrompt(const std::string& question);

}  // namespace blip2::engine
