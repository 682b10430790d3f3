// blip2 client: calls a running server. One subcommand per RPC.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <google/protobuf/text_format.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "blip2.grpc.pb.h"
#include "common/cli_flags.h"
#include "common/file_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/grpc/api_convert.h"
#include "server/cli/commands.h"
#include "server/cli/decoding_flags.h"
#include "server/grpc/retrieval_output.h"
#include "server/security/tls.h"

namespace blip2::server {
namespace {

using common::CliFlags;

int Fail(const absl::Status& status) { return CommandFailed("client", status); }
int Fail(const grpc::Status& status) { return Fail(FromGrpcStatus(status)); }

void PrintCompletion(const v1::Completion& completion) {
  for (const v1::Sequence& s : completion.sequences()) std::printf("%s\n", s.text().c_str());
}

absl::StatusOr<v1::Image> ImageFromFlags(const CliFlags& flags) {
  v1::Image image;
  if (flags.Has("image-id")) {
    image.set_image_id(flags.Get("image-id", ""));
  } else if (flags.Has("image")) {
    auto bytes = common::ReadFile(flags.Get("image", ""));
    if (!bytes.ok()) return bytes.status();
    image.set_data(*bytes);
  } else {
    return absl::InvalidArgumentError("--image FILE or --image-id ID is required");
  }
  return image;
}

void SetDeadline(const CliFlags& flags, grpc::ClientContext* ctx) {
  if (!flags.Has("timeout-ms")) return;
  const int64_t ms = flags.GetInt("timeout-ms", 0).value_or(0);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

// The API key: from --api-key-file (its first line) or BLIP2_API_KEY; never a
// flag's value, which other users of the machine could read in `ps`.
absl::StatusOr<std::string> ApiKeyFromFlags(const CliFlags& flags) {
  if (flags.Has("api-key-file")) {
    auto text = common::ReadFile(flags.Get("api-key-file", ""));
    if (!text.ok()) return text.status();
    std::string key = text->substr(0, text->find('\n'));
    while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
    return key;
  }
  const char* env = std::getenv("BLIP2_API_KEY");
  return std::string(env != nullptr ? env : "");
}

}  // namespace

int RunClient(const std::vector<std::string>& args) {
  if (args.empty()) {
    return Fail(absl::InvalidArgumentError(
        "which call? caption, answer, generate, batch, register, release, info, health, match or embed"));
  }
  const std::string call = args[0];
  std::vector<std::string> known = {"target", "image", "image-id", "prompt", "question", "timeout-ms", "priority",
                                    "service", "text", "ca", "cert", "key", "api-key-file", "ttl-seconds"};
  known.insert(known.end(), DecodingFlagNames().begin(), DecodingFlagNames().end());
  auto flags = CliFlags::Parse(std::vector<std::string>(args.begin() + 1, args.end()), known, {"ids", "tls"});
  if (!flags.ok()) return Fail(flags.status());
  auto overrides = OverridesFromFlags(*flags);
  if (!overrides.ok()) return Fail(overrides.status());
  const v1::DecodingOptions options = OverridesToProto(*overrides);
  auto priority = flags->GetInt("priority", 0);
  if (!priority.ok()) return Fail(priority.status());

  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(-1);
  const ClientTls tls{flags->Has("tls"), flags->Get("ca", ""), flags->Get("cert", ""), flags->Get("key", "")};
  if (!tls.enabled && (flags->Has("ca") || flags->Has("cert") || flags->Has("key"))) {
    return Fail(absl::InvalidArgumentError("--ca, --cert and --key need --tls"));
  }
  auto credentials = GrpcChannelCredentials(tls);
  if (!credentials.ok()) return Fail(credentials.status());
  auto api_key = ApiKeyFromFlags(*flags);
  if (!api_key.ok()) return Fail(api_key.status());
  auto channel = grpc::CreateCustomChannel(flags->Get("target", "127.0.0.1:50051"), *credentials, channel_args);
  auto stub = v1::Blip2::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(*flags, &ctx);
  if (!api_key->empty()) ctx.AddMetadata("authorization", "Bearer " + *api_key);

  if (call == "caption" || call == "answer") {
    auto image = ImageFromFlags(*flags);
    if (!image.ok()) return Fail(image.status());
    v1::Completion completion;
    grpc::Status status;
    if (call == "caption") {
      v1::CaptionRequest request;
      *request.mutable_image() = *image;
      *request.mutable_options() = options;
      request.set_priority(static_cast<int>(*priority));
      status = stub->Caption(&ctx, request, &completion);
    } else {
      v1::AnswerRequest request;
      *request.mutable_image() = *image;
      request.set_question(flags->Get("question", ""));
      *request.mutable_options() = options;
      request.set_priority(static_cast<int>(*priority));
      status = stub->Answer(&ctx, request, &completion);
    }
    if (!status.ok()) return Fail(status);
    PrintCompletion(completion);
    return 0;
  }
  if (call == "generate") {
    auto image = ImageFromFlags(*flags);
    if (!image.ok()) return Fail(image.status());
    v1::GenerateRequest request;
    *request.mutable_image() = *image;
    request.set_prompt(flags->Has("question") ? engine::QuestionPrompt(flags->Get("question", ""))
                                              : flags->Get("prompt", ""));
    *request.mutable_options() = options;
    request.set_priority(static_cast<int>(*priority));
    auto reader = stub->Generate(&ctx, request);
    v1::GenerateResponse response;
    const bool ids = flags->Has("ids");
    std::vector<int64_t> all_ids;
    while (reader->Read(&response)) {
      if (response.has_final()) {
        const v1::Completion& final = response.final();
        if (ids) {
          for (const v1::Sequence& s : final.sequences()) {
            std::printf("%s\n", absl::StrJoin(s.token_ids(), " ").c_str());
            // With --logprobs: each token's log-probability, on a line of its own.
            if (s.logprobs_size() > 0) {
              std::string line = "logprobs";
              for (const v1::TokenLogprob& lp : s.logprobs()) absl::StrAppendFormat(&line, " %.7g", lp.logprob());
              std::printf("%s\n", line.c_str());
            }
          }
        } else {
          std::printf("\n");
        }
        const v1::Usage& u = final.usage();
        std::fprintf(stderr, "finish_reason=%s image_tokens=%lld prompt_tokens=%lld generated_tokens=%lld "
                     "queue_ms=%.1f ttft_ms=%.1f total_ms=%.1f\n",
                     final.sequences_size() ? FinishReasonName(final.sequences(0).finish_reason()).c_str() : "-",
                     static_cast<long long>(u.image_tokens()), static_cast<long long>(u.prompt_tokens()),
                     static_cast<long long>(u.generated_tokens()), u.queue_ms(), u.time_to_first_token_ms(),
                     u.total_ms());
      } else if (!ids) {
        std::fputs(response.text().c_str(), stdout);
        std::fflush(stdout);
      }
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return Fail(status);
    return 0;
  }
  if (call == "batch") {
    v1::GenerateBatchRequest request;
    for (const std::string& path : flags->GetAll("image")) {
      auto bytes = common::ReadFile(path);
      if (!bytes.ok()) return Fail(bytes.status());
      v1::BatchItem* item = request.add_items();
      item->mutable_image()->set_data(*bytes);
      item->set_prompt(flags->Has("question") ? engine::QuestionPrompt(flags->Get("question", ""))
                                              : flags->Get("prompt", ""));
    }
    *request.mutable_options() = options;
    request.set_priority(static_cast<int>(*priority));
    auto reader = stub->GenerateBatch(&ctx, request);
    v1::BatchItemResult result;
    int failed = 0;
    while (reader->Read(&result)) {
      if (result.code() == 0) {
        const auto& seqs = result.completion().sequences();
        std::printf("%d\t%s\n", result.index(), seqs.empty() ? "" : seqs[0].text().c_str());
      } else {
        ++failed;
        std::printf("%d\terror %s: %s\n", result.index(),
                    absl::StatusCodeToString(static_cast<absl::StatusCode>(result.code())).c_str(),
                    result.message().c_str());
      }
      std::fflush(stdout);
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return Fail(status);
    return failed == 0 ? 0 : 1;
  }
  if (call == "register") {
    auto bytes = common::ReadFile(flags->Get("image", ""));
    if (!bytes.ok()) return Fail(bytes.status());
    v1::RegisterImageRequest request;
    request.set_data(*bytes);
    if (flags->Has("ttl-seconds")) {
      auto ttl = flags->GetInt("ttl-seconds", 0);
      if (!ttl.ok()) return Fail(ttl.status());
      request.set_ttl_seconds(static_cast<int32_t>(*ttl));
    }
    v1::RegisterImageResponse response;
    const grpc::Status status = stub->RegisterImage(&ctx, request, &response);
    if (!status.ok()) return Fail(status);
    std::printf("%s\n", response.image_id().c_str());
    return 0;
  }
  if (call == "release") {
    v1::ReleaseImageRequest request;
    request.set_image_id(flags->Get("image-id", ""));
    v1::ReleaseImageResponse response;
    const grpc::Status status = stub->ReleaseImage(&ctx, request, &response);
    if (!status.ok()) return Fail(status);
    return 0;
  }
  if (call == "info") {
    v1::ModelInfo info;
    const grpc::Status status = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) return Fail(status);
    std::string text;
    google::protobuf::TextFormat::PrintToString(info, &text);
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  if (call == "match") {
    v1::MatchRequest request;
    auto image = ImageFromFlags(*flags);
    if (!image.ok()) return Fail(image.status());
    *request.mutable_image() = *image;
    const std::vector<std::string> texts = flags->GetAll("text");
    for (const std::string& t : texts) request.add_texts(t);
    v1::MatchResponse response;
    const grpc::Status status = stub->Match(&ctx, request, &response);
    if (!status.ok()) return Fail(status);
    PrintMatch(texts, response);
    return 0;
  }
  if (call == "embed") {
    v1::EmbedRequest request;
    for (const std::string& path : flags->GetAll("image")) {
      auto bytes = common::ReadFile(path);
      if (!bytes.ok()) return Fail(bytes.status());
      request.add_images()->set_data(*bytes);
    }
    for (const std::string& t : flags->GetAll("text")) request.add_texts(t);
    v1::EmbedResponse response;
    const grpc::Status status = stub->Embed(&ctx, request, &response);
    if (!status.ok()) return Fail(status);
    PrintEmbed(response);
    return 0;
  }
  if (call == "health") {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(flags->Get("service", ""));
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&ctx, request, &response);
    if (!status.ok()) return Fail(status);
    std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
    return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
  }
  return Fail(absl::InvalidArgumentError(absl::StrCat("unknown call \"", call, "\"")));
}

}  // namespace blip2::server
