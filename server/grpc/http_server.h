// A minimal HTTP/1.0 server for the operator endpoints (/metrics, /healthz):
// one thread, one request per connection, GET only. Not for user traffic.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace blip2::server {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;
  // Listens on host:port (port 0 picks one) and serves until destroyed.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& host, int port, Handler handler);
  ~HttpServer();
  int port() const { return port_; }

 private:
  HttpServer(int listen_fd, int wake_fd, int port, Handler handler);
  void Serve();
  void HandleConnection(int fd);
  int listen_fd_, wake_fd_, port_;
  Handler handler_;
  std::thread thread_;
};

}  // namespace blip2::server
