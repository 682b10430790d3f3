// A load generator for the OpenAI-compatible HTTP API: N streaming chat
// requests (Server-Sent Events) always in flight, each connection issuing one
// after another (keep-alive), all on ONE client thread (Boost.Beast), plain or
// TLS. Reports captions/s, generated tokens/s and time to first event
// (p50/p90/p99), errors by HTTP status, as a table and JSON. Never asserts
// timings; the exit code is 0 whenever the report was written.
//
//   build/benchmarks/http_load --url http://127.0.0.1:8080 --model blip2-tiny-opt --concurrency 1,32,256,1000
//   build/benchmarks/http_load --url https://127.0.0.1:8443 --ca ca.pem ...
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <utility>  // before Boost 1.74's asio, which needs std::exchange under C++20

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "benchmarks/load_stats.h"
#include "benchmarks/test_jpeg.h"
#include "common/cli_flags.h"

namespace blip2::bench {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// One level's shared state (one thread: no locks).
struct Level {
  tcp::endpoint endpoint;
  std::string host, api_key;
  net::ssl::context* tls = nullptr;  // null: plaintext
  const std::vector<std::string>* bodies = nullptr;
  int64_t total = 0, next = 0, finished = 0;
  int64_t tokens = 0;
  std::vector<double> ttft_ms, latency_ms;
  std::map<std::string, int64_t> errors;
  std::map<std::string, std::string> error_text;

  void Error(const std::string& kind, const std::string& text) {
    ++finished;
    ++errors[kind];
    error_text.emplace(kind, text.substr(0, 200));
  }
};

// One connection running requests back to back; on a connection error it
// counts the request as failed and hands over to a fresh connection.
template <class Stream>
class Client : public std::enable_shared_from_this<Client<Stream>> {
 public:
  template <class... Args>
  Client(Level* level, Args&&... args) : level_(level), stream_(std::forward<Args>(args)...) {}

  void Start() {
    auto self = this->shared_from_this();
    beast::get_lowest_layer(stream_).async_connect(level_->endpoint, [self](beast::error_code ec) {
      if (ec) return self->Broken("connect", ec);
      // A TLS request goes out as several records: without this, Nagle's
      // algorithm holds the last one for the server's delayed ACK (40 ms).
      beast::get_lowest_layer(self->stream_).socket().set_option(tcp::no_delay(true), ec);
      if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
        self->stream_.async_handshake(net::ssl::stream_base::client, [self](beast::error_code ec) {
          if (ec) return self->Broken("tls", ec);
          self->Next();
        });
      } else {
        self->Next();
      }
    });
  }

 private:
  void Next() {
    if (level_->next >= level_->total) return Close();
    const int64_t i = level_->next++;
    in_flight_ = true;
    request_ = {http::verb::post, "/v1/chat/completions", 11};
    request_.set(http::field::host, level_->host);
    request_.set(http::field::content_type, "application/json");
    if (!level_->api_key.empty()) request_.set(http::field::authorization, "Bearer " + level_->api_key);
    request_.keep_alive(true);
    request_.body() = (*level_->bodies)[static_cast<size_t>(i) % level_->bodies->size()];
    request_.prepare_payload();
    start_ = Clock::now();
    first_event_.reset();
    auto self = this->shared_from_this();
    http::async_write(stream_, request_, [self](beast::error_code ec, size_t) {
      if (ec) return self->Broken("write", ec);
      self->parser_.emplace();
      self->parser_->body_limit(boost::none);
      http::async_read_header(self->stream_, self->buffer_, *self->parser_,
                              [self](beast::error_code ec, size_t) { self->OnHeader(ec); });
    });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return Broken("read", ec);
    ReadSome();
  }

  void ReadSome() {
    auto self = this->shared_from_this();
    http::async_read_some(stream_, buffer_, *parser_, [self](beast::error_code ec, size_t) {
      if (ec) return self->Broken("read", ec);
      // The first event (the first text delta) is the time to first token.
      if (!self->first_event_ && self->parser_->get().body().find("data: ") != std::string::npos) {
        self->first_event_ = Clock::now();
      }
      if (!self->parser_->is_done()) return self->ReadSome();
      self->Finished();
    });
  }

  void Finished() {
    in_flight_ = false;
    const auto& response = parser_->get();
    const std::string& body = response.body();
    if (response.result_int() != 200 || body.find("data: [DONE]") == std::string::npos ||
        body.find("\"error\"") != std::string::npos) {
      level_->Error(absl::StrCat("HTTP ", response.result_int()), body);
    } else {
      ++level_->finished;
      const size_t usage = body.rfind("\"completion_tokens\":");
      int64_t tokens = 0;
      if (usage != std::string::npos) {
        const size_t from = usage + 20;
        absl::SimpleAtoi(body.substr(from, body.find_first_of(",}", from) - from), &tokens);
      }
      level_->tokens += tokens;
      level_->ttft_ms.push_back(Seconds(start_, first_event_.value_or(Clock::now())) * 1e3);
      level_->latency_ms.push_back(Seconds(start_, Clock::now()) * 1e3);
    }
    if (!response.keep_alive()) {  // the server closes: carry on over a new connection
      Close();
      Replace();
      return;
    }
    Next();
  }

  void Broken(const char* what, beast::error_code ec) {
    Close();
    if (!in_flight_) {  // connect or TLS failed: the request it would have sent fails
      if (level_->next >= level_->total) return;
      ++level_->next;
    }
    in_flight_ = false;
    level_->Error(what, ec.message());
    Replace();
  }

  void Replace() {
    if (level_->next >= level_->total) return;
    Level* level = level_;
    net::any_io_executor executor = beast::get_lowest_layer(stream_).get_executor();
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      std::make_shared<Client<Stream>>(level, executor, *level->tls)->Start();
    } else {
      std::make_shared<Client<Stream>>(level, executor)->Start();
    }
  }

  void Close() {
    beast::error_code ec;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(stream_).socket().close(ec);
  }

  Level* level_;
  Stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  std::optional<http::response_parser<http::string_body>> parser_;
  Clock::time_point start_;
  std::optional<Clock::time_point> first_event_;
  bool in_flight_ = false;  // a request was sent and its response is not complete
};

nlohmann::json RunLevel(Level& level, int concurrent, int new_tokens, bool tls) {
  net::io_context ioc(1);
  const Clock::time_point start = Clock::now();
  for (int c = 0; c < concurrent && c < level.total; ++c) {
    if (tls) {
      std::make_shared<Client<beast::ssl_stream<beast::tcp_stream>>>(&level, ioc.get_executor(), *level.tls)->Start();
    } else {
      std::make_shared<Client<beast::tcp_stream>>(&level, ioc.get_executor())->Start();
    }
  }
  ioc.run();  // until every client has run out of requests
  const double seconds = Seconds(start, Clock::now());
  const int64_t ok = static_cast<int64_t>(level.latency_ms.size());
  int64_t errors = 0;
  for (const auto& [kind, n] : level.errors) errors += n;
  std::printf("%8d %8lld %6lld %10.1f %10.0f %8.1f %8.1f %8.1f %9.1f\n", concurrent,
              static_cast<long long>(level.finished), static_cast<long long>(errors), ok / seconds,
              static_cast<double>(level.tokens) / seconds, Percentile(level.ttft_ms, 0.5),
              Percentile(level.ttft_ms, 0.9), Percentile(level.ttft_ms, 0.99), Percentile(level.latency_ms, 0.99));
  for (const auto& [kind, n] : level.errors) {
    std::printf("         %lld requests failed: %s (first: %s)\n", static_cast<long long>(n), kind.c_str(),
                level.error_text.at(kind).c_str());
  }
  std::fflush(stdout);
  return {{"concurrent", concurrent},
          {"new_tokens", new_tokens},
          {"requests", level.finished},
          {"ok", ok},
          {"errors", level.errors},
          {"error_messages", level.error_text},
          {"seconds", seconds},
          {"requests_per_s", ok / seconds},
          {"tokens_per_s", static_cast<double>(level.tokens) / seconds},
          {"ttft_ms", {{"p50", Percentile(level.ttft_ms, 0.5)}, {"p90", Percentile(level.ttft_ms, 0.9)},
                       {"p99", Percentile(level.ttft_ms, 0.99)}}},
          {"latency_ms", {{"p50", Percentile(level.latency_ms, 0.5)}, {"p99", Percentile(level.latency_ms, 0.99)}}}};
}

int Main(int argc, char** argv) {
  auto flags = common::CliFlags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                       {"url", "model", "concurrency", "requests", "new-tokens", "image-size", "ca",
                                        "api-key", "out"});
  if (!flags.ok()) {
    std::fprintf(stderr, "http_load: %s\n", flags.status().ToString().c_str());
    return 2;
  }
  const std::string url = flags->Get("url", "http://127.0.0.1:8080");
  const bool tls = url.rfind("https://", 0) == 0;
  const std::string authority = url.substr(url.find("://") + 3);
  const size_t colon = authority.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(authority.substr(colon + 1), &port)) {
    std::fprintf(stderr, "http_load: --url must be http(s)://ADDRESS:PORT\n");
    return 2;
  }
  const std::string host = authority.substr(0, colon);
  const int64_t requests = flags->GetInt("requests", 1024).value_or(1024);
  const int new_tokens = static_cast<int>(flags->GetInt("new-tokens", 32).value_or(32));
  const int image_size = static_cast<int>(flags->GetInt("image-size", 224).value_or(224));
  const std::string model = flags->Get("model", "blip2-tiny-opt");
  net::ssl::context ctx(net::ssl::context::tls_client);
  if (tls) {
    ctx.set_verify_mode(net::ssl::verify_peer);
    if (flags->Has("ca")) {
      ctx.load_verify_file(flags->Get("ca", ""));
    } else {
      ctx.set_default_verify_paths();
    }
  }
  // A different series of images on every run and level, so the server's
  // image cache never answers: every request decodes and encodes its image.
  const int run_seed = static_cast<int>(std::random_device()() % 1000) * 1000000;
  std::printf("%8s %8s %6s %10s %10s %8s %8s %8s %9s\n", "streams", "requests", "errors", "captions/s", "tokens/s",
              "ttft50", "ttft90", "ttft99", "total99");
  nlohmann::json rows = nlohmann::json::array();
  int level_index = 0;
  for (absl::string_view s : absl::StrSplit(flags->Get("concurrency", "1,32,256,1000"), ',')) {
    int concurrent = 0;
    if (!absl::SimpleAtoi(s, &concurrent) || concurrent <= 0) {
      std::fprintf(stderr, "http_load: bad level \"%s\"\n", std::string(s).c_str());
      return 2;
    }
    std::vector<std::string> bodies;
    const int64_t total = std::max<int64_t>(requests, concurrent);
    for (int64_t i = 0; i < total; ++i) {
      const std::string jpeg = MakeTestJpeg(image_size, image_size, run_seed + 10000 * level_index + static_cast<int>(i));
      bodies.push_back(nlohmann::json({{"model", model},
                                       {"max_tokens", new_tokens},
                                       {"min_tokens", new_tokens},
                                       {"stream", true},
                                       {"stream_options", {{"include_usage", true}}},
                                       {"messages",
                                        {{{"role", "user"},
                                          {"content",
                                           {{{"type", "image_url"},
                                             {"image_url", {{"url", "data:image/jpeg;base64," + absl::Base64Escape(jpeg)}}}}}}}}}})
                           .dump());
    }
    ++level_index;
    Level level;
    level.endpoint = tcp::endpoint(net::ip::make_address(host == "localhost" ? "127.0.0.1" : host),
                                   static_cast<uint16_t>(port));
    level.host = host;
    level.api_key = flags->Get("api-key", "");
    level.tls = tls ? &ctx : nullptr;
    level.bodies = &bodies;
    level.total = total;
    rows.push_back(RunLevel(level, concurrent, new_tokens, tls));
  }
  const nlohmann::json report = {{"benchmark", "http_load"}, {"url", url},        {"tls", tls},
                                 {"image_size", image_size}, {"client_threads", 1}, {"results", rows}};
  if (flags->Has("out")) {
    std::ofstream(flags->Get("out", "")) << report.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    std::printf("wrote %s\n", flags->Get("out", "").c_str());
  }
  return 0;
}

}  // namespace
}  // namespace blip2::bench

int main(int argc, char** argv) { return blip2::bench::Main(argc, argv); }
