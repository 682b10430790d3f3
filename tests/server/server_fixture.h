// A real server on 127.0.0.1 (in this process) and real gRPC clients, for the
// server tests.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "blip2.grpc.pb.h"
#include "server/grpc/grpc_server.h"
#include "server/grpc/server_config.h"

namespace blip2::testing {

// The tiny OPT fixture with its position table stretched to 1024 positions
// (rows repeated), so one request can generate ~1000 tokens: long enough to
// cancel, time out, overload or drain mid-generation. Made once per process.
std::string LongContextModelDir();

// Ports picked by the system, no warm-up, the given model.
config::ServerConfig TestConfig(const std::string& model_dir);

class TestServer {
 public:
  explicit TestServer(const config::ServerConfig& cfg);
  ~TestServer();

  server::Blip2Server& server() { return *server_; }
  std::string target() const;
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  v1::Blip2::Stub& stub() { return *stub_; }
  // GET http://127.0.0.1:<metrics port><path>: the body, or "" when refused.
  std::string HttpGet(const std::string& path) const;
  // The value of one series in /metrics, e.g. `blip2_kv_cache_blocks_used` or
  // `blip2_requests_total{rpc="Generate",code="OK"}`; 0 when absent.
  double Metric(const std::string& series) const;
  // Polls Metric until `want` or 10 s; returns the last value.
  double WaitForMetric(const std::string& series, double want) const;
  // Polls Metric until `done(value)` or 10 s; returns the last value.
  double WaitForMetric(const std::string& series, const std::function<bool(double)>& done) const;

 private:
  std::unique_ptr<server::Blip2Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Blip2::Stub> stub_;
};

// Encoded bytes of a fixture image (tests/fixtures/images/<name>).
std::string ImageBytes(const std::string& name);

// A Generate request on an image that generates exactly `tokens` tokens.
v1::GenerateRequest LongRequest(int tokens);

struct StreamEnd {
  grpc::Status status;
  int64_t tokens = 0;       // token ids in the messages read here, plus `already`
  bool ended_final = false;  // the last message carried `final`
};
// Reads the rest of a Generate stream, then finishes it.
StreamEnd ReadToEnd(grpc::ClientReaderInterface<v1::GenerateResponse>& reader, int64_t already = 0);

}  // namespace blip2::testing
