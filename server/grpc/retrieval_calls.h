// Match and Embed: the retrieval RPCs. Images are decoded on the service's
// pool, then every image and the texts go to the retrieval engine as
// requests of their own (so images share the vision batcher and the image
// cache with everything else); the call answers when all have ended.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <string>
#include <vector>

#include "blip2.pb.h"
#include "server/grpc/service_core.h"

namespace blip2::server {

// FAILED_PRECONDITION naming `what` when the server has no retrieval checkpoint.
absl::Status RetrievalAvailable(const ServiceCore& core, const std::string& what);

// Builds a call's engine requests from its API message (on the pool).
using RetrievalBuild = std::function<absl::StatusOr<std::vector<engine::RetrievalRequest>>(engine::Engine&)>;
// Every request's result in order, or the first error.
using RetrievalDone = std::function<void(absl::StatusOr<std::vector<engine::RetrievalResult>>)>;
// Builds on the service's pool, submits every request to core->retrieval (not
// null: check RetrievalAvailable first) and calls `done` once, on whichever
// thread ends the last request. For the gRPC calls and the HTTP API.
void RunRetrieval(ServiceCore* core, RetrievalBuild build, RetrievalDone done);

// Embed's engine requests: one per image (decoded and preprocessed), then
// one for all the texts. INVALID_ARGUMENT for no images and no texts, or a
// bad image (naming images[i]).
absl::StatusOr<std::vector<engine::RetrievalRequest>> BuildEmbedRequests(const ServiceCore& core,
                                                                         engine::Engine& engine,
                                                                         const v1::EmbedRequest& request);
// The response from BuildEmbedRequests' results.
v1::EmbedResponse EmbedResponseFromResults(const std::vector<engine::RetrievalResult>& results, int images);

grpc::ServerUnaryReactor* StartMatch(ServiceCore* core, grpc::CallbackServerContext* ctx,
                                     const v1::MatchRequest& request, v1::MatchResponse* response);
grpc::ServerUnaryReactor* StartEmbed(ServiceCore* core, grpc::CallbackServerContext* ctx,
                                     const v1::EmbedRequest& request, v1::EmbedResponse* response);

}  // namespace blip2::server
