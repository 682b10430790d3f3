#include "server/grpc/blip2_service.h"

#include <atomic>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/generation/generation_params.h"
#include "server/grpc/api_convert.h"
#include "server/grpc/retrieval_calls.h"
#include "server/grpc/engine_job.h"
#include "server/imaging/image_decoder.h"
#include "server/grpc/stream_reactor.h"
#include "server/grpc/version.h"

namespace blip2::server {
namespace {

JobInput MakeInput(const CallRecord& record, const v1::Image& image, std::string prompt,
                   const v1::DecodingOptions& options, int priority) {
  JobInput input;
  input.image = image;
  input.prompt = std::move(prompt);
  input.options = options;
  input.priority = priority;
  input.deadline = record.deadline();
  return input;
}

int64_t GeneratedTokens(const absl::StatusOr<v1::Completion>& result) {
  return result.ok() ? result->usage().generated_tokens() : 0;
}

// The status a job's call ends with: the job's own error; or, when the client
// went away (its cancellation ended the job), CANCELLED / DEADLINE_EXCEEDED.
grpc::Status CallStatus(const absl::StatusOr<v1::Completion>& result, const CallRecord& record, bool client_gone) {
  if (client_gone) return record.ClientGone();
  return result.ok() ? grpc::Status::OK : ToGrpcStatus(result.status());
}

// A generation call's requests enter the admission queue once every other
// check (`admitted`) passed.
absl::StatusOr<std::vector<AdmissionQueue::Ticket>> EnterQueue(ServiceCore* core, const absl::Status& admitted,
                                                               int priority, int count) {
  if (!admitted.ok()) return admitted;
  return core->EnterQueue(priority, count);
}

// Generate: token deltas as they come, then the completion.
class GenerateCall final : public StreamReactor<v1::GenerateResponse> {
 public:
  GenerateCall(ServiceCore* core, grpc::CallbackServerContext* ctx, const v1::GenerateRequest& request)
      : StreamReactor(&core->writer), record_(core, ctx, "Generate") {
    absl::Status admitted = record_.Admit(CallKind::kGeneration);
    if (admitted.ok()) admitted = record_.CheckSize(request);
    auto tickets = EnterQueue(core, admitted, request.priority(), 1);
    if (!tickets.ok()) {
      End(ToGrpcStatus(tickets.status()), 0);
      return;
    }
    JobCallbacks callbacks;
    callbacks.on_token = [this](int64_t token, const engine::TokenLogprob* logprob) {
      v1::GenerateResponse delta;
      delta.add_token_ids(token);
      if (logprob != nullptr) FillLogprob(*logprob, delta.add_logprobs());
      Push(std::move(delta), /*mergeable=*/true);
    };
    callbacks.on_text = [this](const std::string& text) {
      v1::GenerateResponse delta;
      delta.set_text(text);
      Push(std::move(delta), /*mergeable=*/true);
    };
    callbacks.on_done = [this](absl::StatusOr<v1::Completion> result) {
      const grpc::Status status = CallStatus(result, record_, client_gone_);
      const int64_t tokens = GeneratedTokens(result);
      if (status.ok()) {
        v1::GenerateResponse last;
        *last.mutable_final() = std::move(*result);
        Push(std::move(last), /*mergeable=*/false);
      }
      End(status, tokens);
    };
    job_ = EngineJob::Start(core, MakeInput(record_, request.image(), request.prompt(), request.options(),
                                            request.priority()),
                            std::move(callbacks), record_.start(), record_.id(), tickets->front());
  }

  void OnCancel() override {
    client_gone_ = true;
    if (job_) job_->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  void Merge(v1::GenerateResponse& last, const v1::GenerateResponse& next) override {
    last.mutable_text()->append(next.text());
    last.mutable_token_ids()->MergeFrom(next.token_ids());
    last.mutable_logprobs()->MergeFrom(next.logprobs());
  }
  void End(const grpc::Status& status, int64_t tokens) {
    record_.Finished(status, tokens);
    FinishWhenFlushed(status);  // last: the reactor may be gone after this
  }

  CallRecord record_;
  std::shared_ptr<EngineJob> job_;
  std::atomic<bool> client_gone_{false};
};

// Caption and Answer: one job, one response.
class CompletionCall final : public grpc::ServerUnaryReactor {
 public:
  CompletionCall(ServiceCore* core, grpc::CallbackServerContext* ctx, const char* rpc,
                 const google::protobuf::Message& request, absl::Status invalid, JobInput input,
                 v1::Completion* response)
      : record_(core, ctx, rpc), response_(response) {
    absl::Status admitted = record_.Admit(CallKind::kGeneration);
    if (admitted.ok()) admitted = record_.CheckSize(request);
    if (admitted.ok()) admitted = invalid;
    auto tickets = EnterQueue(core, admitted, input.priority, 1);
    if (!tickets.ok()) {
      End(ToGrpcStatus(tickets.status()), 0);
      return;
    }
    input.deadline = record_.deadline();
    JobCallbacks callbacks;
    callbacks.on_done = [this](absl::StatusOr<v1::Completion> result) {
      const grpc::Status status = CallStatus(result, record_, client_gone_);
      const int64_t tokens = GeneratedTokens(result);
      if (status.ok()) *response_ = std::move(*result);
      End(status, tokens);
    };
    job_ = EngineJob::Start(core, std::move(input), std::move(callbacks), record_.start(), record_.id(),
                            tickets->front());
  }

  void OnCancel() override {
    client_gone_ = true;
    if (job_) job_->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  void End(const grpc::Status& status, int64_t tokens) {
    record_.Finished(status, tokens);
    Finish(status);
  }
  CallRecord record_;
  v1::Completion* response_;
  std::shared_ptr<EngineJob> job_;
  std::atomic<bool> client_gone_{false};
};

// GenerateBatch: one job per item, results as they finish.
class BatchCall final : public StreamReactor<v1::BatchItemResult> {
 public:
  BatchCall(ServiceCore* core, grpc::CallbackServerContext* ctx, const v1::GenerateBatchRequest& request)
      : StreamReactor(&core->writer), record_(core, ctx, "GenerateBatch") {
    absl::Status admitted = record_.Admit(CallKind::kGeneration);
    if (admitted.ok()) admitted = record_.CheckSize(request);
    const int64_t max_items = core->cfg.limits().max_batch_items();
    if (admitted.ok() && (request.items_size() == 0 || request.items_size() > max_items)) {
      admitted = absl::InvalidArgumentError(absl::StrCat("items: ", request.items_size(), " items; give 1 to ",
                                                         max_items, " (max_batch_items)"));
    }
    auto tickets = EnterQueue(core, admitted, request.priority(), request.items_size());
    if (!tickets.ok()) {
      End(ToGrpcStatus(tickets.status()));
      return;
    }
    remaining_ = request.items_size();
    for (int i = 0; i < request.items_size(); ++i) {
      const v1::BatchItem& item = request.items(i);
      JobCallbacks callbacks;
      callbacks.on_done = [this, i](absl::StatusOr<v1::Completion> result) {
        v1::BatchItemResult out;
        out.set_index(i);
        if (result.ok()) {
          *out.mutable_completion() = std::move(*result);
          tokens_ += out.completion().usage().generated_tokens();
        } else {
          out.set_code(static_cast<int>(result.status().code()));
          out.set_message(std::string(result.status().message()));
        }
        Push(std::move(out), /*mergeable=*/false);
        if (--remaining_ == 0) End(client_gone_ ? record_.ClientGone() : grpc::Status::OK);
      };
      jobs_.push_back(EngineJob::Start(core,
                                       MakeInput(record_, item.image(), item.prompt(), request.options(),
                                                 request.priority()),
                                       std::move(callbacks), record_.start(),
                                       absl::StrCat(record_.id(), "/", i), (*tickets)[i]));
    }
  }

  void OnCancel() override {
    client_gone_ = true;
    for (const auto& job : jobs_) job->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  void Merge(v1::BatchItemResult&, const v1::BatchItemResult&) override {}  // never mergeable
  void End(const grpc::Status& status) {
    record_.Finished(status, tokens_);
    FinishWhenFlushed(status);
  }
  CallRecord record_;
  std::vector<std::shared_ptr<EngineJob>> jobs_;
  std::atomic<int> remaining_{0};
  std::atomic<int64_t> tokens_{0};
  std::atomic<bool> client_gone_{false};
};

// RegisterImage: decode on the pool, then encode and pin in the engine.
class RegisterCall final : public grpc::ServerUnaryReactor, public engine::RequestSink {
 public:
  static void Start(ServiceCore* core, grpc::CallbackServerContext* ctx, const v1::RegisterImageRequest& request,
                    v1::RegisterImageResponse* response, grpc::ServerUnaryReactor** reactor) {
    // Shared with the engine (as its sink) until the registration's terminal event.
    auto call = std::shared_ptr<RegisterCall>(new RegisterCall(core, ctx, response));
    call->self_ = call;
    *reactor = call.get();
    absl::Status admitted = call->record_.Admit(CallKind::kModel);
    if (admitted.ok()) admitted = call->record_.CheckSize(request);
    if (admitted.ok() && request.data().empty()) admitted = absl::InvalidArgumentError("data is empty");
    if (!admitted.ok()) return call->End(admitted);
    std::optional<std::chrono::seconds> ttl;
    if (request.has_ttl_seconds()) ttl = std::chrono::seconds(request.ttl_seconds());
    call->ttl_seconds_ = static_cast<int32_t>(ttl.value_or(std::chrono::seconds(core->cfg.limits().registration_ttl_seconds())).count());
    core->pool.Post([call, core, data = request.data(), ttl] {
      auto pixels = DecodeToPixels(data, DecodeLimits{core->cfg.max_image_pixels()},
                                   core->engine->spec().image_processor, "data");
      if (!pixels.ok()) return call->End(pixels.status());
      call->key_ = engine::ImageContentKey(*pixels);  // before the engine can finish the registration
      auto key = core->engine->RegisterImage(std::move(*pixels), call, ttl);
      if (!key.ok()) return call->End(key.status());
    });
  }

  void OnFinished(const engine::CaptionResult&, const engine::Usage&) override { End(absl::OkStatus()); }
  void OnError(const absl::Status& status) override { End(status); }
  void OnDone() override { self_.reset(); }

 private:
  RegisterCall(ServiceCore* core, grpc::CallbackServerContext* ctx, v1::RegisterImageResponse* response)
      : record_(core, ctx, "RegisterImage"), response_(response) {}
  void End(const absl::Status& status) {
    if (status.ok()) {
      response_->set_image_id(FormatImageId(key_));
      response_->set_ttl_seconds(ttl_seconds_);
    }
    record_.Finished(ToGrpcStatus(status));
    Finish(ToGrpcStatus(status));
  }
  CallRecord record_;
  v1::RegisterImageResponse* response_;
  std::atomic<uint64_t> key_{0};
  int32_t ttl_seconds_ = 0;
  std::shared_ptr<RegisterCall> self_;
};

}  // namespace

Blip2Service::Blip2Service(engine::Engine* engine, engine::Engine* retrieval, const config::ServerConfig& cfg,
                           ServerMetrics* metrics, ApiKeys* keys)
    : core_(engine, retrieval, cfg, metrics, keys) {}

grpc::ServerUnaryReactor* Blip2Service::Match(grpc::CallbackServerContext* ctx, const v1::MatchRequest* request,
                                              v1::MatchResponse* response) {
  return StartMatch(&core_, ctx, *request, response);
}

grpc::ServerUnaryReactor* Blip2Service::Embed(grpc::CallbackServerContext* ctx, const v1::EmbedRequest* request,
                                              v1::EmbedResponse* response) {
  return StartEmbed(&core_, ctx, *request, response);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* Blip2Service::Generate(grpc::CallbackServerContext* ctx,
                                                                       const v1::GenerateRequest* request) {
  return new GenerateCall(&core_, ctx, *request);
}

grpc::ServerUnaryReactor* Blip2Service::Caption(grpc::CallbackServerContext* ctx, const v1::CaptionRequest* request,
                                                v1::Completion* response) {
  JobInput input;
  input.image = request->image();
  input.options = request->options();
  input.priority = request->priority();
  return new CompletionCall(&core_, ctx, "Caption", *request, absl::OkStatus(), std::move(input), response);
}

grpc::ServerUnaryReactor* Blip2Service::Answer(grpc::CallbackServerContext* ctx, const v1::AnswerRequest* request,
                                               v1::Completion* response) {
  JobInput input;
  input.image = request->image();
  input.prompt = engine::QuestionPrompt(request->question());
  input.options = request->options();
  input.priority = request->priority();
  const absl::Status invalid =
      request->question().empty() ? absl::InvalidArgumentError("question is required") : absl::OkStatus();
  return new CompletionCall(&core_, ctx, "Answer", *request, invalid, std::move(input), response);
}

grpc::ServerWriteReactor<v1::BatchItemResult>* Blip2Service::GenerateBatch(grpc::CallbackServerContext* ctx,
                                                                           const v1::GenerateBatchRequest* request) {
  return new BatchCall(&core_, ctx, *request);
}

grpc::ServerUnaryReactor* Blip2Service::RegisterImage(grpc::CallbackServerContext* ctx,
                                                      const v1::RegisterImageRequest* request,
                                                      v1::RegisterImageResponse* response) {
  grpc::ServerUnaryReactor* reactor = nullptr;
  RegisterCall::Start(&core_, ctx, *request, response, &reactor);
  return reactor;
}

grpc::ServerUnaryReactor* Blip2Service::ReleaseImage(grpc::CallbackServerContext* ctx,
                                                     const v1::ReleaseImageRequest* request,
                                                     v1::ReleaseImageResponse* response) {
  CallRecord record(&core_, ctx, "ReleaseImage");
  absl::Status status = record.Admit(CallKind::kInfo);
  absl::StatusOr<uint64_t> key = ParseImageId(request->image_id());
  if (status.ok()) status = key.status();
  if (status.ok()) status = core_.engine->ReleaseImage(*key);
  if (absl::IsNotFound(status)) {
    status = absl::NotFoundError(absl::StrCat("image_id ", request->image_id(), " is not registered"));
  }
  record.Finished(ToGrpcStatus(status));
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* Blip2Service::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                     const v1::GetModelInfoRequest* request,
                                                     v1::ModelInfo* response) {
  CallRecord record(&core_, ctx, "GetModelInfo");
  const absl::Status status = record.Admit(CallKind::kInfo);
  if (status.ok()) *response = DescribeModel(*core_.engine, core_.retrieval, core_.cfg);
  record.Finished(ToGrpcStatus(status));
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

v1::ModelInfo DescribeModel(const engine::Engine& engine, const engine::Engine* retrieval,
                            const config::ServerConfig& cfg) {
  const engine::ModelSpec& spec = engine.spec();
  const engine::EngineStats stats = engine.Stats();
  v1::ModelInfo info;
  const bool t5 = spec.config.language_model == engine::LanguageModelKind::kT5;
  info.set_model_type(spec.config.is_retrieval() ? "blip2-itm" : t5 ? "blip2-t5" : "blip2-opt");
  info.set_architecture(spec.config.architecture);
  info.set_model_name(std::filesystem::path(spec.model_dir).lexically_normal().filename().string());
  if (info.model_name().empty()) {
    info.set_model_name(std::filesystem::path(spec.model_dir).lexically_normal().parent_path().filename().string());
  }
  info.set_image_size(static_cast<int32_t>(spec.config.vision.image_size));
  info.set_num_query_tokens(static_cast<int32_t>(spec.processor_num_query_tokens));
  info.set_vision_hidden_size(static_cast<int32_t>(spec.config.vision.hidden_size));
  info.set_vision_layers(static_cast<int32_t>(spec.config.vision.num_hidden_layers));
  info.set_qformer_hidden_size(static_cast<int32_t>(spec.config.qformer.hidden_size));
  info.set_qformer_layers(static_cast<int32_t>(spec.config.qformer.num_hidden_layers));
  if (t5) {
    info.set_text_hidden_size(static_cast<int32_t>(spec.config.t5.d_model));
    info.set_text_layers(static_cast<int32_t>(spec.config.t5.num_decoder_layers));
    info.set_text_encoder_layers(static_cast<int32_t>(spec.config.t5.num_layers));
    info.set_vocab_size(static_cast<int32_t>(spec.config.t5.vocab_size));
  } else {
    info.set_text_hidden_size(static_cast<int32_t>(spec.config.opt.hidden_size));
    info.set_text_layers(static_cast<int32_t>(spec.config.opt.num_hidden_layers));
    info.set_vocab_size(static_cast<int32_t>(spec.config.opt.vocab_size));
    info.set_max_position_embeddings(static_cast<int32_t>(spec.config.opt.max_position_embeddings));
  }
  info.set_dtype(cfg.dtype());
  info.set_device(cfg.device());
  info.set_kv_cache_blocks(stats.kv_blocks_total);
  info.set_kv_cache_blocks_used(stats.kv_blocks_used);
  info.set_kv_cache_blocks_cached(stats.kv_blocks_cached);
  info.set_prefix_caching(cfg.kv_cache().prefix_caching());
  info.set_prefix_cache_hits(stats.prefix_cache_hits);
  info.set_prefix_cache_misses(stats.prefix_cache_misses);
  info.set_prefix_cache_evictions(stats.prefix_cache_evictions);
  info.set_registered_images(stats.registered_images);
  info.set_image_registrations(stats.image_registrations);
  info.set_image_registrations_expired(stats.image_registrations_expired);
  info.set_kv_block_size(static_cast<int32_t>(cfg.kv_cache().block_size()));
  v1::Limits* l = info.mutable_limits();
  const config::Limits& c = cfg.limits();
  l->set_max_message_bytes(c.max_message_bytes());
  l->set_max_image_pixels(cfg.max_image_pixels());
  l->set_max_prompt_tokens(c.max_prompt_tokens());
  l->set_max_new_tokens(c.max_new_tokens());
  l->set_max_num_beams(c.max_num_beams());
  l->set_max_stop_strings(c.max_stop_strings());
  l->set_max_concurrent_streams(c.max_concurrent_streams());
  l->set_max_queued_requests(c.max_queued_requests());
  l->set_max_queue_wait_ms(c.max_queue_wait_ms());
  l->set_max_batch_items(c.max_batch_items());
  l->set_max_registered_images(c.max_registered_images());
  l->set_registration_ttl_seconds(c.registration_ttl_seconds());
  l->set_max_registration_ttl_seconds(c.max_registration_ttl_seconds());
  info.set_server_version(kServerVersion);
  if (engine.serves_generation()) info.add_serves("generation");
  if (retrieval != nullptr) {
    info.add_serves("retrieval");
    info.set_retrieval_model_name(
        std::filesystem::path(retrieval->spec().model_dir).lexically_normal().filename().string());
    info.set_embedding_size(static_cast<int32_t>(retrieval->spec().config.image_text_hidden_size));
    info.set_max_texts(static_cast<int32_t>(c.max_texts()));
    info.set_max_text_tokens(static_cast<int32_t>(retrieval->max_text_tokens()));
  }
  return info;
}

}  // namespace blip2::server
