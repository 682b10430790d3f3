// Match and Embed: the retrieval RPCs. Images are decoded on the service's
// pool, then every image and the texts go to the retrieval engine as
// requests of their own (so images share the vision batcher and the image
// cache with everything else); the call answers when all have ended.
#pragma once

#include <grpcpp/grpcpp.h>

#include "blip2.pb.h"
#include "server/grpc/service_core.h"

namespace blip2::server {

grpc::ServerUnaryReactor* StartMatch(ServiceCore* core, grpc::CallbackServerContext* ctx,
                                     const v1::MatchRequest& request, v1::MatchResponse* response);
grpc::ServerUnaryReactor* StartEmbed(ServiceCore* core, grpc::CallbackServerContext* ctx,
                                     const v1::EmbedRequest& request, v1::EmbedResponse* response);

}  // namespace blip2::server
