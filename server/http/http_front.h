// The OpenAI-compatible HTTP front (docs/http.md), beside gRPC in the same
// process: Boost.Beast on a few threads holding any number of connections,
// serving through the gRPC service's ServiceCore (the same engine, image
// decoding pool, admission limits, API keys and metrics).
//
//   GET  /v1/models              the served model
//   POST /v1/chat/completions    caption or answer; "stream": true is
//                                Server-Sent Events ending with "data: [DONE]"
//   POST /v1/embeddings          text and image embeddings (retrieval model)
//
// A client that goes away cancels its request (its KV blocks are freed).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/grpc/service_core.h"
#include "server_config.pb.h"

namespace blip2::server {

class HttpFront {
 public:
  // Listens on host:port (0 picks a free port) with `threads` I/O threads.
  // `model` is the name clients give in "model" for chat (the generation
  // model folder's name, "" for none); `retrieval_model` for embeddings.
  // With security's certificate and key the port speaks TLS only (mutual
  // with a client CA), as the gRPC port does; the files are re-read every
  // tls_refresh_seconds and by Reload (SIGHUP).
  static absl::StatusOr<std::unique_ptr<HttpFront>> Start(ServiceCore* core, const std::string& host, int port,
                                                          int threads, const std::string& model,
                                                          const std::string& retrieval_model,
                                                          const config::Security& security);
  // Re-reads the certificate files for new connections (open ones keep
  // theirs). On an error the certificate in use stays.
  absl::Status Reload();
  ~HttpFront();  // stops accepting, ends open connections, joins its threads

  int port() const;

 private:
  struct Impl;
  explicit HttpFront(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace blip2::server
