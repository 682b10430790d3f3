#include "engine/generation/generation_params.h"

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace blip2::engine {
namespace {

absl::Status Bad(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

}  // namespace

absl::StatusOr<EarlyStopping> ParseEarlyStopping(const std::string& text) {
  if (text == "true") return EarlyStopping::kTrue;
  if (text == "false") return EarlyStopping::kFalse;
  if (text == "never") return EarlyStopping::kNever;
  return Bad("early_stopping", absl::StrCat("expected true, false or never, got \"", text, "\""));
}

absl::Status ApplyGenerateKwarg(const std::string& key, const nlohmann::json& v, GenerationOverrides* o) {
  try {
    if (key == "max_new_tokens") o->max_new_tokens = v.get<int64_t>();
    else if (key == "min_new_tokens") o->min_new_tokens = v.get<int64_t>();
    else if (key == "num_beams") o->num_beams = v.get<int64_t>();
    else if (key == "num_return_sequences") o->num_return_sequences = v.get<int64_t>();
    else if (key == "length_penalty") o->length_penalty = v.get<double>();
    else if (key == "temperature") o->temperature = v.get<double>();
    else if (key == "top_p") o->top_p = v.get<double>();
    else if (key == "top_k") o->top_k = v.get<int64_t>();
    else if (key == "seed") o->seed = v.get<uint64_t>();
    else if (key == "repetition_penalty") o->repetition_penalty = v.get<double>();
    else if (key == "no_repeat_ngram_size") o->no_repeat_ngram_size = v.get<int64_t>();
    else if (key == "logprobs") o->logprobs = v.get<int64_t>();
    else if (key == "do_sample") o->do_sample = v.get<bool>();
    else if (key == "eos_token_id")
      o->eos_token_ids = v.is_array() ? v.get<std::vector<int64_t>>() : std::vector<int64_t>{v.get<int64_t>()};
    else if (key == "stop")
      o->stop_strings = v.is_string() ? std::vector<std::string>{v.get<std::string>()} : v.get<std::vector<std::string>>();
    else if (key == "early_stopping") {
      absl::StatusOr<EarlyStopping> e =
          ParseEarlyStopping(v.is_string() ? v.get<std::string>() : (v.get<bool>() ? "true" : "false"));
      if (!e.ok()) return e.status();
      o->early_stopping = *e;
    } else {
      return absl::NotFoundError(absl::StrCat("\"", key, "\" is not a generation option"));
    }
  } catch (const nlohmann::json::exception&) {
    return Bad(key, absl::StrCat("value ", v.dump(), " has the wrong type"));
  }
  return absl::OkStatus();
}

std::string QuestionPrompt(const std::string& question) { return absl::StrCat("Question: ", question, " Answer:"); }

absl::StatusOr<GenerationParams> ResolveGenerationParams(const GenerationConfig& d, const GenerationOverrides& o,
                                                         const GenerationLimits& limits) {
  GenerationParams p;
  // transformers 5 with BLIP-2: max_length counts new tokens when no max_new_tokens is set.
  p.max_new_tokens = o.max_new_tokens.value_or(d.max_new_tokens.value_or(d.max_length));
  p.min_new_tokens = o.min_new_tokens.value_or(d.min_new_tokens.value_or(0));
  p.num_beams = o.num_beams.value_or(d.num_beams);
  p.length_penalty = o.length_penalty.value_or(d.length_penalty);
  p.early_stopping = o.early_stopping.value_or(d.early_stopping_never ? EarlyStopping::kNever
                                               : d.early_stopping     ? EarlyStopping::kTrue
                                                                      : EarlyStopping::kFalse);
  p.num_return_sequences = o.num_return_sequences.value_or(d.num_return_sequences);
  p.temperature = o.temperature.value_or(d.temperature);
  p.top_k = o.top_k.value_or(d.top_k);
  p.top_p = o.top_p.value_or(d.top_p);
  // Asking for a sampling knob means sampling, unless do_sample says otherwise.
  const bool sampling_knob = o.temperature.has_value() || o.top_k.has_value() || o.top_p.has_value();
  p.do_sample = o.do_sample.value_or(d.do_sample || sampling_knob);
  p.repetition_penalty = o.repetition_penalty.value_or(d.repetition_penalty);
  p.no_repeat_ngram_size = o.no_repeat_ngram_size.value_or(d.no_repeat_ngram_size);
  p.eos_token_ids = o.eos_token_ids.value_or(d.eos_token_id);
  p.stop_strings = o.stop_strings;
  p.logprobs = o.logprobs.value_or(-1);
  if (o.seed) {
    p.seed = *o.seed;
  } else if (p.do_sample) {
    p.seed = std::random_device{}();
  }

  if (p.max_new_tokens <= 0 || p.max_new_tokens > limits.max_new_tokens) {
    return Bad("max_new_tokens", absl::StrCat(p.max_new_tokens, " is outside [1, ", limits.max_new_tokens, "]"));
  }
  if (p.min_new_tokens < 0) return Bad("min_new_tokens", "must not be negative");
  if (p.num_beams <= 0 || p.num_beams > limits.max_num_beams) {
    return Bad("num_beams", absl::StrCat(p.num_beams, " is outside [1, ", limits.max_num_beams, "]"));
  }
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return Bad("temperature", absl::StrCat("must be a finite number >= 0, got ", p.temperature));
  }
  if (p.temperature == 0) p.do_sample = false;  // the usual meaning of temperature 0
  if (!(p.top_p > 0 && p.top_p <= 1)) return Bad("top_p", absl::StrCat("must be in (0, 1], got ", p.top_p));
  if (p.top_k < 0) return Bad("top_k", absl::StrCat("must not be negative, got ", p.top_k));
  if (!std::isfinite(p.length_penalty)) return Bad("length_penalty", "must be finite");
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0) {
    return Bad("repetition_penalty", absl::StrCat("must be a finite number > 0, got ", p.repetition_penalty));
  }
  if (p.no_repeat_ngram_size < 0) return Bad("no_repeat_ngram_size", "must not be negative");
  if (p.num_return_sequences <= 0) return Bad("num_return_sequences", "must be positive");
  if (p.num_beams > 1 && p.num_return_sequences > p.num_beams) {
    return Bad("num_return_sequences", absl::StrCat(p.num_return_sequences, " exceeds num_beams ", p.num_beams));
  }
  if (p.num_beams == 1 && !p.do_sample && p.num_return_sequences > 1) {
    return Bad("num_return_sequences", "greedy decoding returns one sequence; use beams or sampling for more");
  }
  if (p.num_beams == 1 && p.do_sample && p.num_return_sequences > limits.max_num_beams) {
    return Bad("num_return_sequences", absl::StrCat("at most ", limits.max_num_beams, " samples"));
  }
  if (static_cast<int64_t>(p.stop_strings.size()) > limits.max_stop_strings) {
    return Bad("stop", absl::StrCat("at most ", limits.max_stop_strings, " stop strings"));
  }
  for (const std::string& s : p.stop_strings) {
    if (s.empty()) return Bad("stop", "stop strings must not be empty");
  }
  if (!p.stop_strings.empty() && p.num_beams > 1) {
    return Bad("stop", "stop strings are not supported with beam search");
  }
  if (o.logprobs && (*o.logprobs < 0 || *o.logprobs > kMaxTopLogprobs)) {
    return Bad("logprobs", absl::StrCat(*o.logprobs, " is outside [0, ", kMaxTopLogprobs, "]"));
  }
  if (p.logprobs >= 0 && p.num_beams > 1) {
    return Bad("logprobs", "log-probabilities are not available with beam search");
  }
  return p;
}

}  // namespace blip2::engine
