// The blip2.v1.Blip2 service on gRPC's callback API. Every handler returns at
// once: image decoding runs on the service's pool, generation on the engine
// thread, and results flow back through reactors.
#pragma once

#include <memory>

#include "blip2.grpc.pb.h"
#include "server/grpc/service_core.h"

namespace blip2::server {

class Blip2Service final : public v1::Blip2::CallbackService {
 public:
  // `retrieval`: the handle serving Match and Embed (engine->retrieval()), or
  // null; `keys`: the API keys every call must carry, or null.
  Blip2Service(engine::Engine* engine, engine::Engine* retrieval, const config::ServerConfig& cfg,
               ServerMetrics* metrics, ApiKeys* keys);

  // New calls get UNAVAILABLE from now on; calls in flight go on.
  void StartDraining() { core_.draining = true; }
  int64_t calls_in_flight() const { return core_.in_flight.load(); }
  // What every front shares: engine, pools, admission, metrics (the HTTP
  // front runs its requests through it too).
  ServiceCore& core() { return core_; }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* ctx,
                                                           const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Caption(grpc::CallbackServerContext* ctx, const v1::CaptionRequest* request,
                                    v1::Completion* response) override;
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const v1::AnswerRequest* request,
                                   v1::Completion* response) override;
  grpc::ServerWriteReactor<v1::BatchItemResult>* GenerateBatch(grpc::CallbackServerContext* ctx,
                                                               const v1::GenerateBatchRequest* request) override;
  grpc::ServerUnaryReactor* RegisterImage(grpc::CallbackServerContext* ctx, const v1::RegisterImageRequest* request,
                                          v1::RegisterImageResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseImage(grpc::CallbackServerContext* ctx, const v1::ReleaseImageRequest* request,
                                         v1::ReleaseImageResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Match(grpc::CallbackServerContext* ctx, const v1::MatchRequest* request,
                                  v1::MatchResponse* response) override;
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* ctx, const v1::EmbedRequest* request,
                                  v1::EmbedResponse* response) override;

 private:
  ServiceCore core_;
};

// What GetModelInfo returns (also logged at start).
v1::ModelInfo DescribeModel(const engine::Engine& engine, const engine::Engine* retrieval,
                            const config::ServerConfig& cfg);

}  // namespace blip2::server
