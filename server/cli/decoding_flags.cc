#include "server/cli/decoding_flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace blip2::server {
namespace {

absl::StatusOr<double> ParseDouble(const common::CliFlags& flags, const std::string& name) {
  double v = 0;
  if (!absl::SimpleAtod(flags.Get(name, ""), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " expects a number, got \"", flags.Get(name, ""), "\""));
  }
  return v;
}

}  // namespace

const std::vector<std::string>& DecodingFlagNames() {
  static const std::vector<std::string> names = {
      "max-new-tokens", "min-new-tokens", "num-beams", "num-return-sequences", "top-k",
      "no-repeat-ngram-size", "length-penalty", "temperature", "top-p", "repetition-penalty",
      "early-stopping", "seed", "stop", "logprobs"};
  return names;
}

absl::StatusOr<engine::GenerationOverrides> OverridesFromFlags(const common::CliFlags& flags) {
  engine::GenerationOverrides o;
  struct IntFlag {
    const char* name;
    std::optional<int64_t>* field;
  };
  for (const IntFlag& f : {IntFlag{"max-new-tokens", &o.max_new_tokens}, {"min-new-tokens", &o.min_new_tokens},
                           {"num-beams", &o.num_beams}, {"num-return-sequences", &o.num_return_sequences},
                           {"top-k", &o.top_k}, {"no-repeat-ngram-size", &o.no_repeat_ngram_size},
                           {"logprobs", &o.logprobs}}) {
    if (!flags.Has(f.name)) continue;
    auto v = flags.GetInt(f.name, 0);
    if (!v.ok()) return v.status();
    *f.field = *v;
  }
  struct DoubleFlag {
    const char* name;
    std::optional<double>* field;
  };
  for (const DoubleFlag& f : {DoubleFlag{"length-penalty", &o.length_penalty}, {"temperature", &o.temperature},
                              {"top-p", &o.top_p}, {"repetition-penalty", &o.repetition_penalty}}) {
    if (!flags.Has(f.name)) continue;
    auto v = ParseDouble(flags, f.name);
    if (!v.ok()) return v.status();
    *f.field = *v;
  }
  if (flags.Has("early-stopping")) {
    auto e = engine::ParseEarlyStopping(flags.Get("early-stopping", ""));
    if (!e.ok()) return e.status();
    o.early_stopping = *e;
  }
  if (flags.Has("seed")) {
    uint64_t seed = 0;
    if (!absl::SimpleAtoi(flags.Get("seed", ""), &seed)) {
      return absl::InvalidArgumentError("--seed expects a non-negative integer");
    }
    o.seed = seed;
  }
  o.stop_strings = flags.GetAll("stop");
  // Log-probabilities are printed beside the ids: asked for without them they would be lost.
  if (o.logprobs && !flags.Has("ids")) return absl::InvalidArgumentError("--logprobs is printed with --ids: add --ids");
  return o;
}

}  // namespace blip2::server
