// The whole server: engine, blip2.v1 service, gRPC health and reflection, and
// the metrics endpoint, with a graceful drain.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "server_config.pb.h"

namespace blip2::server {

class Blip2Server {
 public:
  // Loads the model, warms it up (when cfg.warmup), starts listening, and only
  // then reports SERVING on grpc.health.v1.
  static absl::StatusOr<std::unique_ptr<Blip2Server>> Start(const config::ServerConfig& cfg);
  ~Blip2Server();  // Drain(0) if not drained

  int port() const;
  int metrics_port() const;  // -1 when off
  int http_port() const;     // the OpenAI-compatible API's; -1 when off
  // Health NOT_SERVING, new calls UNAVAILABLE, calls in flight get `grace` to
  // finish (then they end UNAVAILABLE), then the server stops.
  void Drain(std::chrono::milliseconds grace);
  // The /metrics text, as a scrape would see it.
  std::string RenderMetrics() const;
  // SIGHUP: re-reads the API keys file and the HTTP API's certificate now
  // (both are also re-read on their own: keys when the file changes,
  // certificates every security.tls_refresh_seconds, gRPC's by its watcher).
  absl::Status Reload();

 private:
  struct Impl;
  explicit Blip2Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace blip2::server
