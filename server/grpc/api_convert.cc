#include "server/grpc/api_convert.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace blip2::server {

engine::GenerationOverrides OverridesFromProto(const v1::DecodingOptions& p) {
  engine::GenerationOverrides o;
  if (p.has_max_new_tokens()) o.max_new_tokens = p.max_new_tokens();
  if (p.has_min_new_tokens()) o.min_new_tokens = p.min_new_tokens();
  if (p.has_num_beams()) o.num_beams = p.num_beams();
  if (p.has_length_penalty()) o.length_penalty = p.length_penalty();
  switch (p.early_stopping()) {
    case v1::DecodingOptions::EARLY_STOPPING_FALSE: o.early_stopping = engine::EarlyStopping::kFalse; break;
    case v1::DecodingOptions::EARLY_STOPPING_TRUE: o.early_stopping = engine::EarlyStopping::kTrue; break;
    case v1::DecodingOptions::EARLY_STOPPING_NEVER: o.early_stopping = engine::EarlyStopping::kNever; break;
    default: break;
  }
  if (p.has_num_return_sequences()) o.num_return_sequences = p.num_return_sequences();
  if (p.has_do_sample()) o.do_sample = p.do_sample();
  if (p.has_temperature()) o.temperature = p.temperature();
  if (p.has_top_k()) o.top_k = p.top_k();
  if (p.has_top_p()) o.top_p = p.top_p();
  if (p.has_repetition_penalty()) o.repetition_penalty = p.repetition_penalty();
  if (p.has_no_repeat_ngram_size()) o.no_repeat_ngram_size = p.no_repeat_ngram_size();
  if (p.has_seed()) o.seed = p.seed();
  if (p.has_logprobs()) o.logprobs = p.logprobs();
  o.stop_strings.assign(p.stop().begin(), p.stop().end());
  return o;
}

v1::DecodingOptions OverridesToProto(const engine::GenerationOverrides& o) {
  v1::DecodingOptions p;
  if (o.max_new_tokens) p.set_max_new_tokens(static_cast<int32_t>(*o.max_new_tokens));
  if (o.min_new_tokens) p.set_min_new_tokens(static_cast<int32_t>(*o.min_new_tokens));
  if (o.num_beams) p.set_num_beams(static_cast<int32_t>(*o.num_beams));
  if (o.length_penalty) p.set_length_penalty(static_cast<float>(*o.length_penalty));
  if (o.early_stopping) {
    p.set_early_stopping(*o.early_stopping == engine::EarlyStopping::kTrue    ? v1::DecodingOptions::EARLY_STOPPING_TRUE
                         : *o.early_stopping == engine::EarlyStopping::kNever ? v1::DecodingOptions::EARLY_STOPPING_NEVER
                                                                               : v1::DecodingOptions::EARLY_STOPPING_FALSE);
  }
  if (o.num_return_sequences) p.set_num_return_sequences(static_cast<int32_t>(*o.num_return_sequences));
  if (o.do_sample) p.set_do_sample(*o.do_sample);
  if (o.temperature) p.set_temperature(static_cast<float>(*o.temperature));
  if (o.top_k) p.set_top_k(static_cast<int32_t>(*o.top_k));
  if (o.top_p) p.set_top_p(static_cast<float>(*o.top_p));
  if (o.repetition_penalty) p.set_repetition_penalty(static_cast<float>(*o.repetition_penalty));
  if (o.no_repeat_ngram_size) p.set_no_repeat_ngram_size(static_cast<int32_t>(*o.no_repeat_ngram_size));
  if (o.seed) p.set_seed(*o.seed);
  if (o.logprobs) p.set_logprobs(static_cast<int32_t>(*o.logprobs));
  for (const std::string& s : o.stop_strings) p.add_stop(s);
  return p;
}

v1::FinishReason ToProto(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case engine::FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kStopString: return v1::FINISH_REASON_STOP_STRING;
    case engine::FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_EOS: return "eos";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_STOP_STRING: return "stop_string";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

void FillLogprob(const engine::TokenLogprob& logprob, v1::TokenLogprob* out) {
  out->set_token_id(logprob.token);
  out->set_logprob(logprob.logprob);
  for (const auto& [token, value] : logprob.top) {
    v1::TokenAlternative* alt = out->add_top();
    alt->set_token_id(token);
    alt->set_logprob(value);
  }
}

void FillCompletion(const engine::CaptionResult& result, const engine::Usage& usage, int64_t image_tokens,
                    double offset_ms, v1::Completion* completion) {
  int64_t generated = 0;
  for (const engine::GeneratedSequence& s : result.sequences) {
    v1::Sequence* out = completion->add_sequences();
    out->set_text(s.text);
    out->mutable_token_ids()->Add(s.token_ids.begin(), s.token_ids.end());
    out->set_finish_reason(ToProto(s.finish_reason));
    for (const engine::TokenLogprob& lp : s.logprobs) FillLogprob(lp, out->add_logprobs());
    generated += static_cast<int64_t>(s.token_ids.size());
  }
  v1::Usage* u = completion->mutable_usage();
  u->set_image_tokens(image_tokens);
  u->set_prompt_tokens(std::max<int64_t>(0, usage.prompt_tokens - image_tokens));
  u->set_generated_tokens(generated);
  u->set_queue_ms(usage.queue_ms + offset_ms);
  u->set_time_to_first_token_ms(usage.time_to_first_token_ms + offset_ms);
  u->set_total_ms(usage.total_ms + offset_ms);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::string FormatImageId(uint64_t key) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(key));
  return buf;
}

absl::StatusOr<uint64_t> ParseImageId(const std::string& id) {
  uint64_t key = 0;
  const bool hex = std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isxdigit(c) != 0; });
  if (id.size() != 16 || !hex || !absl::SimpleHexAtoi(id, &key)) {
    return absl::InvalidArgumentError(absl::StrCat("image_id \"", id, "\" is not 16 hex digits (from RegisterImage)"));
  }
  return key;
}

}  // namespace blip2::server
