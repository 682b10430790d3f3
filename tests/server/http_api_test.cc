// The OpenAI-compatible HTTP API through raw HTTP/1.1 on a socket: the statuses
// the official SDK test (openai_check.py) cannot set up (401 with API keys,
// 413, 429 from the admission both fronts share, 404), and a client that hangs
// up mid-stream, whose request is cancelled and whose KV blocks come back.
#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "tests/catch.h"
#include "tests/server/raw_http.h"
#include "tests/server/server_fixture.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

config::ServerConfig HttpConfig(const std::string& model_dir) {
  config::ServerConfig cfg = TestConfig(model_dir);
  cfg.set_http_port(0);
  return cfg;
}

TEST_CASE("HTTP API: missing, wrong and revoked API keys, 404, 413 and OpenAI's error shape") {
  const std::string keys = MakeTempDir() + "/keys";
  std::ofstream(keys) << "http-key\n";
  config::ServerConfig cfg = HttpConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.mutable_security()->set_api_keys_file(keys);
  cfg.mutable_limits()->set_max_message_bytes(8 * 1024);  // chelsea.jpg in base64 is larger
  TestServer server(cfg);
  const int port = server.server().http_port();
  REQUIRE(port > 0);
  {
    Connection c(port);
    c.Send("GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const std::string r = c.ReadUntil("}}");
    CHECK_THAT(r, Catch::StartsWith("HTTP/1.1 401"));
    CHECK_THAT(r, Catch::Contains("WWW-Authenticate: Bearer"));
    CHECK_THAT(r, Catch::Contains(R"("type":"authentication_error")"));
  }
  {
    Connection c(port);
    c.Send("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n");
    CHECK_THAT(c.ReadUntil("}}"), Catch::StartsWith("HTTP/1.1 401"));
  }
  {
    Connection c(port);
    c.Send("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer http-key\r\nConnection: close\r\n\r\n");
    const std::string r = c.ReadUntil("]}");
    CHECK_THAT(r, Catch::StartsWith("HTTP/1.1 200"));
    CHECK_THAT(r, Catch::Contains(R"("id":"blip2-tiny-opt")"));
  }
  {
    Connection c(port);
    c.Send("GET /v2/things HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK_THAT(c.ReadUntil("}}"), Catch::StartsWith("HTTP/1.1 404"));
  }
  {
    Connection c(port);
    c.Send(Post("/v1/chat/completions", ChatBody("blip2-tiny-opt", 4, false), "Authorization: Bearer http-key\r\n"));
    const std::string r = c.ReadUntil("}}");
    CHECK_THAT(r, Catch::StartsWith("HTTP/1.1 413"));
    CHECK_THAT(r, Catch::Contains("max_message_bytes"));
  }
  // Revoked by a reload (SIGHUP): the HTTP API refuses the key from then on, as gRPC does.
  std::ofstream(keys) << "other-key\n";
  REQUIRE(server.server().Reload().ok());
  {
    Connection c(port);
    c.Send("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer http-key\r\nConnection: close\r\n\r\n");
    CHECK_THAT(c.ReadUntil("}}"), Catch::StartsWith("HTTP/1.1 401"));
  }
  {
    Connection c(port);
    c.Send("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer other-key\r\nConnection: close\r\n\r\n");
    CHECK_THAT(c.ReadUntil("]}"), Catch::StartsWith("HTTP/1.1 200"));
  }
  CHECK(server.Metric(R"(blip2_requests_total{rpc="GET /v1/models",code="UNAUTHENTICATED"})") == 3);
}

TEST_CASE("HTTP API: gRPC and HTTP calls share the admission limits (429)") {
  config::ServerConfig cfg = HttpConfig(LongContextModelDir());
  cfg.mutable_limits()->set_max_concurrent_streams(1);
  TestServer server(cfg);
  grpc::ClientContext ctx;
  auto admitted = server.stub().Generate(&ctx, LongRequest(600));
  v1::GenerateResponse message;
  REQUIRE(admitted->Read(&message));  // holds the one slot
  Connection c(server.server().http_port());
  c.Send(Post("/v1/chat/completions", ChatBody("blip2-tiny-opt-long", 4, false)));
  const std::string r = c.ReadUntil("}}");
  CHECK_THAT(r, Catch::StartsWith("HTTP/1.1 429"));
  CHECK_THAT(r, Catch::Contains("max_concurrent_streams"));
  CHECK_THAT(r, Catch::Contains(R"("type":"rate_limit_error")"));
  CHECK(ReadToEnd(*admitted, message.token_ids_size()).status.ok());
  // The refused request gave its slot back: nothing is left in flight, and
  // the next request is served.
  CHECK(server.WaitForMetric("blip2_calls_in_flight", 0) == 0);
  Connection next(server.server().http_port());
  next.Send(Post("/v1/chat/completions", ChatBody("blip2-tiny-opt-long", 4, false)));
  CHECK_THAT(next.ReadUntil("}}"), Catch::StartsWith("HTTP/1.1 200"));
}

TEST_CASE("HTTP API: while the server drains, new requests get 503 and the one in flight completes") {
  TestServer server(HttpConfig(LongContextModelDir()));
  grpc::ClientContext ctx;
  auto in_flight = server.stub().Generate(&ctx, LongRequest(900));
  v1::GenerateResponse message;
  REQUIRE(in_flight->Read(&message));  // the drain waits for it
  std::thread drain([&] { server.server().Drain(std::chrono::seconds(30)); });
  // Draining starts at once; poll until the HTTP API says so.
  std::string models;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    Connection c(server.server().http_port());
    c.Send("GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    models = c.ReadUntil("}}");
    if (models.rfind("HTTP/1.1 503", 0) == 0) break;
  }
  CHECK_THAT(models, Catch::StartsWith("HTTP/1.1 503"));
  CHECK_THAT(models, Catch::Contains("shutting down"));
  Connection chat(server.server().http_port());
  chat.Send(Post("/v1/chat/completions", ChatBody("blip2-tiny-opt-long", 4, false)));
  CHECK_THAT(chat.ReadUntil("}}"), Catch::StartsWith("HTTP/1.1 503"));
  CHECK(ReadToEnd(*in_flight, message.token_ids_size()).status.ok());
  drain.join();
}

TEST_CASE("HTTP API: a kept-alive connection serves one streamed request after another") {
  TestServer server(HttpConfig(FixturesDir() + "/blip2-tiny-opt"));
  Connection c(server.server().http_port());
  std::string keep_alive = Post("/v1/chat/completions", ChatBody("blip2-tiny-opt", 3, true));
  keep_alive.replace(keep_alive.find("Connection: close"), 17, "Connection: keep-alive");
  std::set<std::string> ids;
  for (int i = 1; i <= 3; ++i) {
    c.Send(keep_alive);
    const std::string all = c.ReadUntilCount("data: [DONE]", i);
    const std::string response = all.substr(all.rfind("HTTP/1.1 "));  // this request's
    INFO(response);
    CHECK_THAT(response, Catch::StartsWith("HTTP/1.1 200"));
    CHECK_THAT(response, Catch::Contains("text/event-stream"));
    CHECK_THAT(response, Catch::Contains(R"("role":"assistant")"));
    CHECK_THAT(response, Catch::Contains(R"("finish_reason":"length")"));
    CHECK_THAT(response, Catch::Contains("data: [DONE]"));
    const size_t id = response.find("x-request-id: ");
    REQUIRE(id != std::string::npos);
    ids.insert(response.substr(id, response.find("\r\n", id) - id));
  }
  CHECK(ids.size() == 3);
}

TEST_CASE("HTTP API: a client that hangs up mid-stream cancels its request and frees its KV blocks") {
  TestServer server(HttpConfig(LongContextModelDir()));
  {
    Connection c(server.server().http_port());
    c.Send(Post("/v1/chat/completions", ChatBody("blip2-tiny-opt-long", 900, true)));
    const std::string first = c.ReadUntil("data: ");
    CHECK_THAT(first, Catch::StartsWith("HTTP/1.1 200"));
    CHECK_THAT(first, Catch::Contains("text/event-stream"));
  }  // closed after the first event
  CHECK(server.WaitForMetric(R"(blip2_requests_total{rpc="POST /v1/chat/completions",code="CANCELLED"})", 1) == 1);
  CHECK(server.WaitForMetric("blip2_kv_cache_blocks_used", 0) == 0);
  CHECK(server.Metric("blip2_generated_tokens_total") < 900);
  // The server goes on: a whole stream to [DONE].
  Connection again(server.server().http_port());
  again.Send(Post("/v1/chat/completions", ChatBody("blip2-tiny-opt-long", 5, true)));
  const std::string all = again.ReadUntil("data: [DONE]");
  CHECK_THAT(all, Catch::Contains(R"("finish_reason":"length")"));
  CHECK_THAT(all, Catch::EndsWith("data: [DONE]\n\n\r\n") || Catch::Contains("data: [DONE]"));
}

}  // namespace
}  // namespace blip2::testing
