// The server's pieces without a model: configuration, metrics exposition,
// API conversions.
#include "server/grpc/api_convert.h"
#include "server/grpc/metrics.h"
#include "server/grpc/server_config.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using server::ServerConfigFromArgs;

TEST_CASE("Configuration: defaults, then the file, then flags by field path") {
  const std::string dir = MakeTempDir();
  WriteFile(dir + "/c.textproto", "model_dir: \"/m\"\nport: 1234\nwarmup: false\nlimits { max_new_tokens: 99 }\n");
  std::map<std::string, std::string> own;
  auto cfg = ServerConfigFromArgs({"--config", dir + "/c.textproto", "--limits.max-new-tokens", "64",
                                   "--dtype=float16", "--port_file", "/tmp/x", "--batching.vision_max_batch", "3"},
                                  {"port_file"}, &own);
  REQUIRE(cfg.ok());
  CHECK(cfg->model_dir() == "/m");
  CHECK(cfg->port() == 1234);
  CHECK_FALSE(cfg->warmup());  // false in the file beats the default true
  CHECK(cfg->limits().max_new_tokens() == 64);
  CHECK(cfg->dtype() == "float16");
  CHECK(cfg->batching().vision_max_batch() == 3);
  CHECK(cfg->limits().max_message_bytes() == 32 << 20);  // a default the file left alone
  CHECK(own["port_file"] == "/tmp/x");
  CHECK(server::ValidateServerConfig(*cfg).ok());
  const engine::EngineConfig e = server::ToEngineConfig(*cfg);
  CHECK(e.limits.max_new_tokens == 64);
  CHECK(e.vision_max_batch == 3);
}

TEST_CASE("Configuration errors name the field") {
  std::map<std::string, std::string> own;
  auto unknown = ServerConfigFromArgs({"--limits.max_bananas", "3"}, {}, &own);
  CHECK_THAT(unknown.status().ToString(), Catch::Contains("limits.max_bananas: no such configuration field"));
  auto zero = ServerConfigFromArgs({"--port", "0"}, {}, &own);
  CHECK(zero->port() == 0);  // 0 on a flag beats the default 50051
  auto type = ServerConfigFromArgs({"--port", "eighty"}, {}, &own);
  CHECK_THAT(type.status().ToString(), Catch::Contains("--port: \"eighty\" is not a valid value"));
  auto group = ServerConfigFromArgs({"--limits", "3"}, {}, &own);
  CHECK_THAT(group.status().ToString(), Catch::Contains("is a group of fields"));
  auto missing = ServerConfigFromArgs({"--config", "/nonexistent.textproto"}, {}, &own);
  CHECK(absl::IsNotFound(missing.status()));
  auto no_value = ServerConfigFromArgs({"--port"}, {}, &own);
  CHECK_THAT(no_value.status().ToString(), Catch::Contains("needs a value"));

  config::ServerConfig cfg = server::DefaultServerConfig();
  CHECK_THAT(server::ValidateServerConfig(cfg).ToString(), Catch::Contains("model_dir is required"));
  cfg.set_model_dir("/m");
  cfg.mutable_limits()->set_max_concurrent_streams(0);
  CHECK_THAT(server::ValidateServerConfig(cfg).ToString(), Catch::Contains("limits.max_concurrent_streams"));
  cfg = server::DefaultServerConfig();
  cfg.set_model_dir("/m");
  for (const char* ok : {"", "none", "int8"}) {
    cfg.set_quantization(ok);
    CHECK(server::ValidateServerConfig(cfg).ok());
  }
  cfg.set_quantization("int4");
  CHECK_THAT(server::ValidateServerConfig(cfg).ToString(),
             Catch::Contains("quantization must be \"none\" or \"int8\", got \"int4\""));
  // From a flag, as `blip2 serve --quantization int8` sets it.
  auto int8 = ServerConfigFromArgs({"--model_dir", "/m", "--quantization", "int8"}, {}, &own);
  REQUIRE(int8.ok());
  CHECK(int8->quantization() == "int8");
}

TEST_CASE("Metrics render in the Prometheus text format") {
  server::MetricsRegistry registry;
  server::ScalarFamily& requests = registry.Counter("t_requests_total", "Calls.", {"rpc", "code"});
  server::ScalarFamily& gauge = registry.Gauge("t_depth", "Depth.");
  server::Histogram& latency = registry.AddHistogram("t_latency_seconds", "Latency.", {}, {0.1, 1});
  requests.Add({"Generate", "OK"});
  requests.Add({"Generate", "OK"}, 2);
  requests.Add({"Cap\"tion", "OK"});
  gauge.Set({}, 2.5);
  latency.Observe({}, 0.05);
  latency.Observe({}, 0.5);
  latency.Observe({}, 7);
  const std::string text = registry.Render();
  CHECK_THAT(text, Catch::Contains("# HELP t_requests_total Calls.\n# TYPE t_requests_total counter\n"));
  CHECK_THAT(text, Catch::Contains("t_requests_total{rpc=\"Generate\",code=\"OK\"} 3\n"));
  CHECK_THAT(text, Catch::Contains("t_requests_total{rpc=\"Cap\\\"tion\",code=\"OK\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("t_depth 2.5\n"));
  CHECK_THAT(text, Catch::Contains("t_latency_seconds_bucket{le=\"0.1\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("t_latency_seconds_bucket{le=\"1\"} 2\n"));
  CHECK_THAT(text, Catch::Contains("t_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
  CHECK_THAT(text, Catch::Contains("t_latency_seconds_sum 7.55\n"));
  CHECK_THAT(text, Catch::Contains("t_latency_seconds_count 3\n"));
  latency.SetFromCounts({}, {{0.5, 4}});
  CHECK(latency.Count({}) == 4);
}

TEST_CASE("API conversions: options both ways, image ids, finish reasons") {
  engine::GenerationOverrides o;
  o.max_new_tokens = 12;
  o.top_p = 0.5;
  o.seed = 99;
  o.early_stopping = engine::EarlyStopping::kNever;
  o.stop_strings = {"a", "b"};
  const engine::GenerationOverrides back = server::OverridesFromProto(server::OverridesToProto(o));
  CHECK(back.max_new_tokens == o.max_new_tokens);
  CHECK(back.top_p == o.top_p);
  CHECK(back.seed == o.seed);
  CHECK(back.early_stopping == o.early_stopping);
  CHECK(back.stop_strings == o.stop_strings);
  CHECK_FALSE(back.num_beams.has_value());
  CHECK(server::FormatImageId(0xabcULL) == "0000000000000abc");
  CHECK(*server::ParseImageId("0000000000000abc") == 0xabcULL);
  CHECK_FALSE(server::ParseImageId("abc").ok());
  CHECK_FALSE(server::ParseImageId("0x00000000000abc").ok());
  CHECK(server::ToProto(engine::FinishReason::kStopString) == v1::FINISH_REASON_STOP_STRING);
  CHECK(server::ToProto(engine::FinishReason::kCancelled) == v1::FINISH_REASON_CANCELLED);
}

}  // namespace
}  // namespace blip2::testing
