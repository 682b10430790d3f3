// blip2 match / blip2 embed: retrieval with a local checkpoint, through the
// same engine the server runs; they print what `blip2 client match|embed`
// prints for the same inputs.
#include <cstdio>
#include <string>
#include <vector>

#include "common/cli_flags.h"
#include "common/file_util.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/retrieval_sink.h"
#include "server/cli/commands.h"
#include "server/imaging/image_decoder.h"
#include "server/grpc/retrieval_output.h"

namespace blip2::server {
namespace {

using common::CliFlags;

absl::StatusOr<std::unique_ptr<engine::Engine>> StartEngine(const CliFlags& flags) {
  const std::string model_dir = flags.Get("model", "");
  if (model_dir.empty()) return absl::InvalidArgumentError("--model DIR is required");
  engine::EngineConfig config;
  auto max_text_tokens = flags.GetInt("max-text-tokens", 0);
  if (!max_text_tokens.ok()) return max_text_tokens.status();
  config.max_text_tokens = *max_text_tokens;
  return engine::Engine::Start({model_dir, flags.Get("device", "cpu"), flags.Get("dtype", "float32")}, config);
}

absl::StatusOr<std::vector<float>> LoadPixels(const std::string& path, const engine::Engine& engine) {
  auto bytes = common::ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeToPixels(*bytes, DecodeLimits{}, engine.spec().image_processor, path);
}

absl::StatusOr<engine::RetrievalResult> Run(engine::Engine& engine, engine::RetrievalRequest request) {
  auto sink = std::make_shared<engine::RetrievalWaiter>();
  auto id = engine.SubmitRetrieval(std::move(request), sink);
  if (!id.ok()) return id.status();
  return sink->Wait();
}

const std::vector<std::string> kFlags = {"model", "image", "text", "device", "dtype", "max-text-tokens"};

}  // namespace

int RunMatch(const std::vector<std::string>& args) {
  const auto fail = [](const absl::Status& s) { return CommandFailed("match", s); };
  auto flags = CliFlags::Parse(args, kFlags, {});
  if (!flags.ok()) return fail(flags.status());
  if (!flags->Has("image")) return fail(absl::InvalidArgumentError("--image FILE is required"));
  auto engine = StartEngine(*flags);
  if (!engine.ok()) return fail(engine.status());
  auto pixels = LoadPixels(flags->Get("image", ""), **engine);
  if (!pixels.ok()) return fail(pixels.status());
  const std::vector<std::string> texts = flags->GetAll("text");
  auto result = Run(**engine, {std::move(*pixels), std::nullopt, texts, /*match=*/true, /*features=*/false});
  if (!result.ok()) return fail(result.status());
  PrintMatch(texts, MatchResponseFrom(*result));
  return 0;
}

int RunEmbed(const std::vector<std::string>& args) {
  const auto fail = [](const absl::Status& s) { return CommandFailed("embed", s); };
  auto flags = CliFlags::Parse(args, kFlags, {});
  if (!flags.ok()) return fail(flags.status());
  auto engine = StartEngine(*flags);
  if (!engine.ok()) return fail(engine.status());
  std::vector<engine::RetrievalResult> images;
  for (const std::string& path : flags->GetAll("image")) {
    auto pixels = LoadPixels(path, **engine);
    if (!pixels.ok()) return fail(pixels.status());
    auto result = Run(**engine, {std::move(*pixels), std::nullopt, {}, false, false});
    if (!result.ok()) return fail(result.status());
    images.push_back(std::move(*result));
  }
  std::optional<engine::RetrievalResult> texts;
  if (flags->Has("text")) {
    auto result = Run(**engine, {{}, std::nullopt, flags->GetAll("text"), false, false});
    if (!result.ok()) return fail(result.status());
    texts = std::move(*result);
  }
  if (images.empty() && !texts) return fail(absl::InvalidArgumentError("give --image FILE and/or --text TEXT"));
  PrintEmbed(EmbedResponseFrom(images, texts ? &*texts : nullptr));
  return 0;
}

}  // namespace blip2::server
