// blip2 generate: one image, an optional prompt, every decoding option; prints
// the text (one line per returned sequence), streams it, or prints new ids.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/cli_flags.h"
#include "common/file_util.h"
#include "absl/strings/str_split.h"
#include "engine/runtime/engine.h"
#include <nlohmann/json.hpp>
#include "engine/model/image_preprocessor.h"
#include "server/cli/commands.h"
#include "server/cli/decoding_flags.h"
#include "server/imaging/image_decoder.h"
#include "engine/runtime/waiting_sink.h"

namespace blip2::server {
namespace {

using common::CliFlags;

int Fail(const absl::Status& status) { return CommandFailed("generate", status); }

// Image file -> preprocessed pixels for the engine.
absl::StatusOr<std::vector<float>> LoadPixels(const std::string& path, const engine::Engine& engine,
                                               int64_t max_pixels) {
  auto bytes = common::ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeToPixels(*bytes, DecodeLimits{max_pixels}, engine.spec().image_processor, path);
}

// One line of --requests: {"image": ..., "prompt"|"question": ..., options as in transformers' generate}.
absl::StatusOr<std::pair<std::string, engine::EngineRequest>> RequestFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("each line must be a JSON object");
  engine::EngineRequest r;
  std::string image;
  for (const auto& [key, v] : j.items()) {
    if (key == "image" || key == "prompt" || key == "question") {
      if (!v.is_string()) return absl::InvalidArgumentError("\"" + key + "\" must be a string");
      if (key == "image") image = v.get<std::string>();
      if (key == "prompt") r.prompt = v.get<std::string>();
      if (key == "question") r.prompt = engine::QuestionPrompt(v.get<std::string>());
    } else if (key == "priority") {
      if (!v.is_number_integer()) return absl::InvalidArgumentError("\"priority\" must be an integer");
      r.priority = v.get<int>();
    } else if (absl::Status s = engine::ApplyGenerateKwarg(key, v, &r.overrides); !s.ok()) {
      return absl::IsNotFound(s) ? absl::InvalidArgumentError("unknown field \"" + key + "\"") : s;
    }
  }
  if (image.empty()) return absl::InvalidArgumentError("\"image\" is required");
  return std::make_pair(image, std::move(r));
}

nlohmann::json ResultJson(const absl::StatusOr<engine::CaptionResult>& result, const engine::Usage& usage) {
  if (!result.ok()) return {{"error", result.status().ToString()}};
  nlohmann::json sequences = nlohmann::json::array();
  for (const auto& s : result->sequences) {
    nlohmann::json seq = {{"text", s.text}, {"token_ids", s.token_ids},
                          {"finish_reason", std::string(engine::FinishReasonName(s.finish_reason))}};
    if (!s.logprobs.empty()) {
      nlohmann::json logprobs = nlohmann::json::array();
      for (const engine::TokenLogprob& lp : s.logprobs) logprobs.push_back(lp.logprob);
      seq["logprobs"] = logprobs;
    }
    sequences.push_back(std::move(seq));
  }
  return {{"sequences", sequences},
          {"usage",
           {{"prompt_tokens", usage.prompt_tokens},
            {"completion_tokens", usage.completion_tokens},
            {"queue_ms", usage.queue_ms},
            {"time_to_first_token_ms", usage.time_to_first_token_ms},
            {"total_ms", usage.total_ms}}}};
}

// --requests FILE.jsonl: every line submitted at once, one JSON result line each, in input order.
int RunRequestsFile(engine::Engine& engine, const std::string& path, int64_t max_pixels) {
  auto text = common::ReadFile(path);
  if (!text.ok()) return Fail(text.status());
  std::vector<nlohmann::json> out;
  std::vector<std::shared_ptr<engine::WaitingSink>> sinks;
  int line_no = 0;
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(*text, '\n', absl::SkipWhitespace()))) {
    nlohmann::json entry = {{"index", line_no++}};
    sinks.push_back(nullptr);
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    auto request = j.is_discarded() ? absl::StatusOr<std::pair<std::string, engine::EngineRequest>>(
                                          absl::InvalidArgumentError("not valid JSON"))
                                    : RequestFromJson(j);
    if (request.ok()) {
      entry["image"] = request->first;
      auto pixels = LoadPixels(request->first, engine, max_pixels);
      if (pixels.ok()) {
        request->second.pixels = std::move(*pixels);
        auto sink = std::make_shared<engine::WaitingSink>();
        auto id = engine.Submit(std::move(request->second), sink);
        if (id.ok()) {
          sinks.back() = sink;
        } else {
          entry["error"] = id.status().ToString();
        }
      } else {
        entry["error"] = pixels.status().ToString();
      }
    } else {
      entry["error"] = request.status().ToString();
    }
    out.push_back(std::move(entry));
  }
  for (size_t i = 0; i < out.size(); ++i) {
    if (sinks[i]) {
      const auto result = sinks[i]->Wait();  // before usage(): it is set with the result
      out[i].update(ResultJson(result, sinks[i]->usage()));
    }
    std::printf("%s\n", out[i].dump().c_str());
  }
  return 0;
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  std::vector<std::string> known = {"model", "image", "prompt", "question", "device", "dtype", "quantization", "max-image-pixels",
                                    "requests", "kv-cache-mb", "max-prompt-tokens"};
  known.insert(known.end(), DecodingFlagNames().begin(), DecodingFlagNames().end());
  auto flags = CliFlags::Parse(args, known, {"stream", "ids"});
  if (!flags.ok()) return Fail(flags.status());
  const std::string model_dir = flags->Get("model", "");
  const std::string image_path = flags->Get("image", "");
  if (model_dir.empty() || (image_path.empty() && !flags->Has("requests"))) {
    return Fail(absl::InvalidArgumentError("--model DIR and --image FILE (or --requests FILE.jsonl) are required"));
  }
  if (flags->Has("prompt") && flags->Has("question")) {
    return Fail(absl::InvalidArgumentError("give --prompt or --question, not both"));
  }
  auto overrides = OverridesFromFlags(*flags);
  if (!overrides.ok()) return Fail(overrides.status());
  auto max_pixels = flags->GetInt("max-image-pixels", DecodeLimits().max_pixels);
  if (!max_pixels.ok()) return Fail(max_pixels.status());
  auto kv_mb = flags->GetInt("kv-cache-mb", 256);
  if (!kv_mb.ok()) return Fail(kv_mb.status());
  auto max_prompt_tokens = flags->GetInt("max-prompt-tokens", engine::EngineConfig().max_prompt_tokens);
  if (!max_prompt_tokens.ok()) return Fail(max_prompt_tokens.status());

  // The same engine the server runs: vision batcher, continuous batching, paged KV cache.
  engine::EngineConfig config;
  config.kv_cache_bytes = *kv_mb << 20;
  config.max_prompt_tokens = *max_prompt_tokens;
  auto engine = engine::Engine::Start(
      {model_dir, flags->Get("device", "cpu"), flags->Get("dtype", "float32"), flags->Get("quantization", "none")}, config);
  if (!engine.ok()) return Fail(engine.status());
  if (flags->Has("requests")) return RunRequestsFile(**engine, flags->Get("requests", ""), *max_pixels);

  auto pixels = LoadPixels(image_path, **engine, *max_pixels);
  if (!pixels.ok()) return Fail(pixels.status());
  engine::EngineRequest request;
  request.pixels = std::move(*pixels);
  request.prompt = flags->Has("question") ? engine::QuestionPrompt(flags->Get("question", "")) : flags->Get("prompt", "");
  request.overrides = *overrides;
  const bool ids = flags->Has("ids");
  const bool stream = flags->Has("stream") && !ids;
  std::function<void(const std::string&)> print;
  if (stream) {
    print = [](const std::string& text) {
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
    };
  }
  auto sink = std::make_shared<engine::WaitingSink>(print);
  auto id = (*engine)->Submit(std::move(request), sink);
  if (!id.ok()) return Fail(id.status());
  auto result = sink->Wait();
  if (!result.ok()) return Fail(result.status());
  for (size_t i = 0; i < result->sequences.size(); ++i) {
    const engine::GeneratedSequence& s = result->sequences[i];
    if (ids) {
      std::printf("%s\n", absl::StrJoin(s.token_ids, " ").c_str());
      if (!s.logprobs.empty()) {  // --logprobs: each token's log-probability
        std::string line = "logprobs";
        for (const engine::TokenLogprob& lp : s.logprobs) absl::StrAppendFormat(&line, " %.7g", lp.logprob);
        std::printf("%s\n", line.c_str());
      }
    } else if (stream && i == 0) {
      std::printf("\n");  // the text itself went out as it was produced
    } else {
      std::printf("%s\n", s.text.c_str());
    }
    spdlog::info("sequence {}: {} new tokens, finished by {}", i, s.token_ids.size(), engine::FinishReasonName(s.finish_reason));
  }
  return 0;
}

}  // namespace blip2::server
