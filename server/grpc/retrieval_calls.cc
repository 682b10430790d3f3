#include "server/grpc/retrieval_calls.h"

#include <atomic>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/grpc/api_convert.h"
#include "server/grpc/engine_job.h"
#include "server/grpc/retrieval_output.h"

namespace blip2::server {
namespace {

// N engine requests, one outcome: each request's sink fills its slot; the
// last to end calls `done`. Shared with the engine until then.
class Fanout : public std::enable_shared_from_this<Fanout> {
 public:
  Fanout(size_t n, RetrievalDone done) : results_(n), remaining_(static_cast<int>(n)), done_(std::move(done)) {}

  // One engine request's terminal event, into slot `index`.
  struct Sink : engine::RequestSink {
    Sink(std::shared_ptr<Fanout> fanout, size_t index) : fanout(std::move(fanout)), index(index) {}
    void OnFinished(const engine::CaptionResult&, const engine::Usage&) override {
      fanout->Ended(index, absl::InternalError("a retrieval request ended as a generation"));
    }
    void OnRetrieved(const engine::RetrievalResult& result, const engine::Usage&) override {
      fanout->Ended(index, result);
    }
    void OnError(const absl::Status& status) override { fanout->Ended(index, status); }
    std::shared_ptr<Fanout> fanout;
    size_t index;
  };

  void Ended(size_t index, absl::StatusOr<engine::RetrievalResult> result) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (result.ok()) {
        results_[index] = std::move(*result);
      } else if (error_.ok()) {
        error_ = result.status();  // the first error ends the call
      }
    }
    if (--remaining_ > 0) return;
    RetrievalDone done = std::move(done_);
    if (!error_.ok()) return done(error_);
    done(std::move(results_));
  }

 private:
  std::mutex mu_;
  std::vector<engine::RetrievalResult> results_;
  absl::Status error_;
  std::atomic<int> remaining_;
  RetrievalDone done_;
};

// One Match or Embed call over gRPC. Shared with RunRetrieval's callback
// until it answers and gRPC is done with the reactor.
class RetrievalCall final : public grpc::ServerUnaryReactor {
 public:
  // Fills the response from the requests' results, in order.
  using Fill = std::function<void(const std::vector<engine::RetrievalResult>&)>;

  static grpc::ServerUnaryReactor* Start(ServiceCore* core, grpc::CallbackServerContext* ctx, const char* rpc,
                                         const google::protobuf::Message& request, RetrievalBuild build, Fill fill) {
    auto call = std::shared_ptr<RetrievalCall>(new RetrievalCall(core, ctx, rpc));
    call->self_ = call;
    absl::Status admitted = call->record_.Admit(CallKind::kModel);
    if (admitted.ok()) admitted = call->record_.CheckSize(request);
    if (admitted.ok()) admitted = RetrievalAvailable(*core, rpc);
    if (!admitted.ok()) {
      call->End(admitted);
      return call.get();
    }
    RunRetrieval(core, std::move(build),
                 [call, fill = std::move(fill)](absl::StatusOr<std::vector<engine::RetrievalResult>> results) {
                   if (!results.ok()) return call->End(results.status());
                   fill(*results);
                   call->End(absl::OkStatus());
                 });
    return call.get();
  }

  void OnDone() override { self_.reset(); }

 private:
  RetrievalCall(ServiceCore* core, grpc::CallbackServerContext* ctx, const char* rpc) : record_(core, ctx, rpc) {}

  void End(const absl::Status& status) {
    record_.Finished(ToGrpcStatus(status));
    Finish(ToGrpcStatus(status));
  }

  CallRecord record_;
  std::shared_ptr<RetrievalCall> self_;
};

}  // namespace

absl::Status RetrievalAvailable(const ServiceCore& core, const std::string& what) {
  if (core.retrieval != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what, " needs a retrieval checkpoint (e.g. blip2-itm-vit-g); this server loaded ",
                   core.cfg.model_dir(), ", a generation model (set retrieval_model_dir to add one)"));
}

void RunRetrieval(ServiceCore* core, RetrievalBuild build, RetrievalDone done) {
  core->pool.Post([core, build = std::move(build), done = std::move(done)]() mutable {
    auto requests = build(*core->retrieval);
    if (!requests.ok()) return done(requests.status());
    auto fanout = std::make_shared<Fanout>(requests->size(), std::move(done));
    for (size_t i = 0; i < requests->size(); ++i) {
      auto sink = std::make_shared<Fanout::Sink>(fanout, i);
      auto id = core->retrieval->SubmitRetrieval(std::move((*requests)[i]), sink);
      if (!id.ok()) sink->OnError(id.status());
    }
  });
}

absl::StatusOr<std::vector<engine::RetrievalRequest>> BuildEmbedRequests(const ServiceCore& core,
                                                                         engine::Engine& engine,
                                                                         const v1::EmbedRequest& request) {
  if (request.images().empty() && request.texts().empty()) return absl::InvalidArgumentError("give images, texts or both");
  std::vector<engine::RetrievalRequest> out;
  for (int i = 0; i < request.images_size(); ++i) {
    engine::RetrievalRequest r;
    RETURN_IF_ERROR(
        ResolveImage(core, engine, request.images(i), absl::StrCat("images[", i, "]"), &r.pixels, &r.image_key));
    r.features = request.include_features();
    out.push_back(std::move(r));
  }
  if (!request.texts().empty()) {
    engine::RetrievalRequest r;
    r.texts.assign(request.texts().begin(), request.texts().end());
    r.features = request.include_features();
    out.push_back(std::move(r));
  }
  return out;
}

v1::EmbedResponse EmbedResponseFromResults(const std::vector<engine::RetrievalResult>& results, int images) {
  const std::vector<engine::RetrievalResult> image_results(results.begin(), results.begin() + images);
  return EmbedResponseFrom(image_results, static_cast<int>(results.size()) > images ? &results.back() : nullptr);
}

grpc::ServerUnaryReactor* StartMatch(ServiceCore* core, grpc::CallbackServerContext* ctx,
                                     const v1::MatchRequest& request, v1::MatchResponse* response) {
  auto build = [core, request](engine::Engine& engine) -> absl::StatusOr<std::vector<engine::RetrievalRequest>> {
    if (request.texts().empty()) return absl::InvalidArgumentError("texts is empty: nothing to match the image against");
    engine::RetrievalRequest r;
    RETURN_IF_ERROR(ResolveImage(*core, engine, request.image(), "image", &r.pixels, &r.image_key));
    r.texts.assign(request.texts().begin(), request.texts().end());
    r.match = true;
    return std::vector<engine::RetrievalRequest>{std::move(r)};
  };
  auto fill = [response](const std::vector<engine::RetrievalResult>& results) {
    *response = MatchResponseFrom(results[0]);
  };
  return RetrievalCall::Start(core, ctx, "Match", request, std::move(build), std::move(fill));
}

grpc::ServerUnaryReactor* StartEmbed(ServiceCore* core, grpc::CallbackServerContext* ctx,
                                     const v1::EmbedRequest& request, v1::EmbedResponse* response) {
  auto build = [core, request](engine::Engine& engine) { return BuildEmbedRequests(*core, engine, request); };
  const int images = request.images_size();
  auto fill = [response, images](const std::vector<engine::RetrievalResult>& results) {
    *response = EmbedResponseFromResults(results, images);
  };
  return RetrievalCall::Start(core, ctx, "Embed", request, std::move(build), std::move(fill));
}

}  // namespace blip2::server
