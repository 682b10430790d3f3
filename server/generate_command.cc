// blip2 generate: one image, an optional prompt, every decoding option; prints
// the text (one line per returned sequence), streams it, or prints new ids.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cli_flags.h"
#include "common/file_util.h"
#include "engine/captioner.h"
#include "engine/image_preprocessor.h"
#include "server/commands.h"
#include "server/image_decoder.h"

namespace blip2::server {
namespace {

using common::CliFlags;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "blip2 generate: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

absl::StatusOr<double> ParseDouble(const CliFlags& flags, const std::string& name) {
  double v = 0;
  if (!absl::SimpleAtod(flags.Get(name, ""), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " expects a number, got \"", flags.Get(name, ""), "\""));
  }
  return v;
}

// Flags -> overrides; unset flags leave generation_config.json's values.
absl::StatusOr<engine::GenerationOverrides> OverridesFromFlags(const CliFlags& flags) {
  engine::GenerationOverrides o;
  struct IntFlag {
    const char* name;
    std::optional<int64_t>* field;
  };
  for (const IntFlag& f : {IntFlag{"max-new-tokens", &o.max_new_tokens}, {"min-new-tokens", &o.min_new_tokens},
                           {"num-beams", &o.num_beams}, {"num-return-sequences", &o.num_return_sequences},
                           {"top-k", &o.top_k}, {"no-repeat-ngram-size", &o.no_repeat_ngram_size}}) {
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
  return o;
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  auto flags = CliFlags::Parse(
      args,
      {"model", "image", "prompt", "question", "device", "dtype", "max-image-pixels", "max-new-tokens",
       "min-new-tokens", "num-beams", "length-penalty", "early-stopping", "num-return-sequences", "temperature",
       "top-p", "top-k", "seed", "repetition-penalty", "no-repeat-ngram-size", "stop"},
      {"stream", "ids"});
  if (!flags.ok()) return Fail(flags.status());
  const std::string model_dir = flags->Get("model", "");
  const std::string image_path = flags->Get("image", "");
  if (model_dir.empty() || image_path.empty()) return Fail(absl::InvalidArgumentError("--model DIR and --image FILE are required"));
  if (flags->Has("prompt") && flags->Has("question")) {
    return Fail(absl::InvalidArgumentError("give --prompt or --question, not both"));
  }
  auto overrides = OverridesFromFlags(*flags);
  if (!overrides.ok()) return Fail(overrides.status());
  auto max_pixels = flags->GetInt("max-image-pixels", DecodeLimits().max_pixels);
  if (!max_pixels.ok()) return Fail(max_pixels.status());

  auto captioner = engine::Captioner::Load({model_dir, flags->Get("device", "cpu"), flags->Get("dtype", "float32")});
  if (!captioner.ok()) return Fail(captioner.status());
  auto bytes = common::ReadFile(image_path);
  if (!bytes.ok()) return Fail(bytes.status());
  auto rgb = DecodeImage(*bytes, DecodeLimits{*max_pixels});
  if (!rgb.ok()) return Fail(absl::Status(rgb.status().code(), image_path + ": " + std::string(rgb.status().message())));
  auto pixels = engine::PreprocessImage(*rgb, (*captioner)->spec().image_processor);
  if (!pixels.ok()) return Fail(pixels.status());

  engine::CaptionRequest request;
  request.pixels = std::move(*pixels);
  request.prompt = flags->Has("question") ? engine::QuestionPrompt(flags->Get("question", "")) : flags->Get("prompt", "");
  request.overrides = *overrides;
  const bool ids = flags->Has("ids");
  const bool stream = flags->Has("stream") && !ids;
  bool streamed = false;
  engine::TextSink sink;
  if (stream) {
    sink = [&](const std::string& text) {
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
      streamed = true;
    };
  }
  auto result = (*captioner)->Generate(request, sink);
  if (!result.ok()) return Fail(result.status());
  for (size_t i = 0; i < result->sequences.size(); ++i) {
    const engine::GeneratedSequence& s = result->sequences[i];
    if (ids) {
      std::printf("%s\n", absl::StrJoin(s.token_ids, " ").c_str());
    } else if (stream && i == 0 && (streamed || s.text.empty())) {
      std::printf("\n");  // the text itself went out as it was produced
    } else {
      std::printf("%s\n", s.text.c_str());
    }
    spdlog::info("sequence {}: {} new tokens, finished by {}", i, s.token_ids.size(), s.finish_reason);
  }
  return 0;
}

}  // namespace blip2::server
