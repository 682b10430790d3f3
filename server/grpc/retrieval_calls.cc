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

// One Match or Embed call: N engine requests, one response. Shared with the
// engine (as each request's sink) until every request has ended and gRPC is
// done with the reactor.
class RetrievalCall final : public grpc::ServerUnaryReactor {
 public:
  // Builds the call's engine requests from the API message (on the pool).
  using Build = std::function<absl::StatusOr<std::vector<engine::RetrievalRequest>>(engine::Engine&)>;
  // Fills the response from the requests' results, in order.
  using Fill = std::function<void(const std::vector<engine::RetrievalResult>&)>;

  static grpc::ServerUnaryReactor* Start(ServiceCore* core, grpc::CallbackServerContext* ctx, const char* rpc,
                                         const google::protobuf::Message& request, Build build, Fill fill) {
    auto call = std::shared_ptr<RetrievalCall>(new RetrievalCall(core, ctx, rpc, std::move(fill)));
    call->self_ = call;
    absl::Status admitted = call->record_.Admit(/*model_call=*/true);
    if (admitted.ok()) admitted = call->record_.CheckSize(request);
    if (admitted.ok() && core->retrieval == nullptr) {
      admitted = absl::FailedPreconditionError(
          absl::StrCat(rpc, " needs a retrieval checkpoint (e.g. blip2-itm-vit-g); this server loaded ",
                       core->cfg.model_dir(), ", a generation model (set retrieval_model_dir to add one)"));
    }
    if (!admitted.ok()) {
      call->End(admitted);
      return call.get();
    }
    core->pool.Post([call, core, build = std::move(build)] {
      auto requests = build(*core->retrieval);
      if (!requests.ok()) return call->End(requests.status());
      call->results_.resize(requests->size());
      call->remaining_ = static_cast<int>(requests->size());
      for (size_t i = 0; i < requests->size(); ++i) {
        auto sink = std::make_shared<Sink>(call, i);
        auto id = core->retrieval->SubmitRetrieval(std::move((*requests)[i]), sink);
        if (!id.ok()) sink->OnError(id.status());
      }
    });
    return call.get();
  }

  void OnDone() override { self_.reset(); }

 private:
  // One engine request's terminal event, into slot `index`.
  struct Sink : engine::RequestSink {
    Sink(std::shared_ptr<RetrievalCall> call, size_t index) : call(std::move(call)), index(index) {}
    void OnFinished(const engine::CaptionResult&, const engine::Usage&) override {
      call->Ended(index, absl::InternalError("a retrieval request ended as a generation"), {});
    }
    void OnRetrieved(const engine::RetrievalResult& result, const engine::Usage& usage) override {
      call->Ended(index, result, usage);
    }
    void OnError(const absl::Status& status) override { call->Ended(index, status, {}); }
    std::shared_ptr<RetrievalCall> call;
    size_t index;
  };

  RetrievalCall(ServiceCore* core, grpc::CallbackServerContext* ctx, const char* rpc, Fill fill)
      : record_(core, ctx, rpc), fill_(std::move(fill)) {}

  void Ended(size_t index, absl::StatusOr<engine::RetrievalResult> result, const engine::Usage&) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (result.ok()) {
        results_[index] = std::move(*result);
      } else if (error_.ok()) {
        error_ = result.status();  // the first error ends the call
      }
    }
    if (--remaining_ > 0) return;
    if (!error_.ok()) return End(error_);
    fill_(results_);
    End(absl::OkStatus());
  }

  void End(const absl::Status& status) {
    record_.Finished(ToGrpcStatus(status));
    Finish(ToGrpcStatus(status));
  }

  CallRecord record_;
  Fill fill_;
  std::mutex mu_;
  std::vector<engine::RetrievalResult> results_;
  absl::Status error_;
  std::atomic<int> remaining_{0};
  std::shared_ptr<RetrievalCall> self_;
};

}  // namespace

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
  // One engine request per image (texts on none), then one for all the texts.
  auto build = [core, request](engine::Engine& engine) -> absl::StatusOr<std::vector<engine::RetrievalRequest>> {
    if (request.images().empty() && request.texts().empty()) {
      return absl::InvalidArgumentError("give images, texts or both");
    }
    std::vector<engine::RetrievalRequest> out;
    for (int i = 0; i < request.images_size(); ++i) {
      engine::RetrievalRequest r;
      RETURN_IF_ERROR(
          ResolveImage(*core, engine, request.images(i), absl::StrCat("images[", i, "]"), &r.pixels, &r.image_key));
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
  };
  const int images = request.images_size();
  auto fill = [response, images](const std::vector<engine::RetrievalResult>& results) {
    const std::vector<engine::RetrievalResult> image_results(results.begin(), results.begin() + images);
    *response = EmbedResponseFrom(image_results, static_cast<int>(results.size()) > images ? &results.back() : nullptr);
  };
  return RetrievalCall::Start(core, ctx, "Embed", request, std::move(build), std::move(fill));
}

}  // namespace blip2::server
