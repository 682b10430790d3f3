// http(s) image URLs in chat requests against a real origin on 127.0.0.1
// started here: an allowed fetch captions exactly as the same bytes in a
// data: URL; a forbidden scheme, a domain not allowed, a private address, a
// redirect, an oversize body, a status other than 200 and a timeout are each
// refused with a 400 naming the rule, and the server goes on serving.
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/catch.h"
#include "tests/server/raw_http.h"
#include "tests/server/server_fixture.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

constexpr int kMaxBytes = 50000;  // chelsea.jpg (35 KB) fits, /big does not

// A small HTTP origin: /cat.jpg, /redirect (302), /big (over kMaxBytes),
// /missing (404) and /slow (never answers).
class Origin {
 public:
  Origin() : listener_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(::listen(listener_, 16) == 0);
    socklen_t len = sizeof(addr);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~Origin() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    thread_.join();
    for (int fd : held_) ::close(fd);
  }
  int port() const { return port_; }
  std::string Url(const std::string& host, const std::string& path) const {
    return absl::StrCat("http://", host, ":", port_, path);
  }
  int requests() const { return requests_; }

 private:
  void Serve() {
    while (!stopping_) {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      std::string request;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      ++requests_;
      const std::string path = request.substr(4, request.find(' ', 4) - 4);  // "GET <path> HTTP/1.1"
      std::string response;
      if (path == "/cat.jpg") {
        response = Response("200 OK", ImageBytes("chelsea.jpg"));
      } else if (path == "/redirect") {
        response = absl::StrCat("HTTP/1.1 302 Found\r\nLocation: ", Url("127.0.0.1", "/cat.jpg"),
                                "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      } else if (path == "/big") {
        response = Response("200 OK", std::string(kMaxBytes + 1, 'x'));
      } else if (path == "/slow") {
        held_.push_back(fd);  // open, silent, until the origin stops
        continue;
      } else {
        response = Response("404 Not Found", "no");
      }
      ::send(fd, response.data(), response.size(), MSG_NOSIGNAL);
      ::close(fd);
    }
  }
  static std::string Response(const std::string& status, const std::string& body) {
    return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: image/jpeg\r\nContent-Length: ", body.size(),
                        "\r\nConnection: close\r\n\r\n", body);
  }

  int listener_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> requests_{0};
  std::vector<int> held_;
};

config::ServerConfig UrlConfig(bool allow_private) {
  config::ServerConfig cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.set_http_port(0);
  cfg.mutable_image_urls()->add_allowed_domains("127.0.0.1");
  cfg.mutable_image_urls()->add_allowed_domains("localhost");
  cfg.mutable_image_urls()->set_timeout_ms(500);
  cfg.mutable_image_urls()->set_max_bytes(kMaxBytes);
  cfg.mutable_image_urls()->set_allow_private_addresses(allow_private);
  return cfg;
}

std::string Body(const std::string& response) { return response.substr(response.find("\r\n\r\n") + 4); }

void ExpectRefused(int port, const std::string& url, const std::string& what) {
  const std::string r = Exchange(port, Post("/v1/chat/completions", ChatBodyWithUrl("blip2-tiny-opt", 4, url)));
  INFO(url << "\n" << r);
  CHECK_THAT(r, Catch::StartsWith("HTTP/1.1 400"));
  CHECK_THAT(r, Catch::Contains(what));
  CHECK_THAT(r, Catch::Contains(R"("type":"invalid_request_error")"));
}

TEST_CASE("image URLs: an allowed origin is fetched, and scheme, domain, redirect, size, status and timeout are refused") {
  Origin origin;
  TestServer server(UrlConfig(/*allow_private=*/true));
  const int port = server.server().http_port();
  const std::string by_url =
      Exchange(port, Post("/v1/chat/completions", ChatBodyWithUrl("blip2-tiny-opt", 6, origin.Url("127.0.0.1", "/cat.jpg"))));
  const std::string by_data = Exchange(port, Post("/v1/chat/completions", ChatBody("blip2-tiny-opt", 6, false)));
  REQUIRE_THAT(by_url, Catch::StartsWith("HTTP/1.1 200"));
  REQUIRE_THAT(by_data, Catch::StartsWith("HTTP/1.1 200"));
  const auto content = [](const std::string& r) {
    return nlohmann::json::parse(Body(r))["choices"][0]["message"]["content"].get<std::string>();
  };
  CHECK(content(by_url) == content(by_data));

  ExpectRefused(port, "ftp://127.0.0.1/cat.jpg", "ftp\\\" is not accepted");
  ExpectRefused(port, "gopher://127.0.0.1/cat.jpg", "gopher\\\" is not accepted");
  ExpectRefused(port, "http://example.com/cat.jpg", "example.com\\\" is not in image_urls.allowed_domains");
  ExpectRefused(port, origin.Url("127.0.0.1", "/redirect"), "redirects are not followed");
  ExpectRefused(port, origin.Url("127.0.0.1", "/big"), "larger than image_urls.max_bytes");
  ExpectRefused(port, origin.Url("127.0.0.1", "/missing"), "HTTP 404");
  const auto start = std::chrono::steady_clock::now();
  ExpectRefused(port, origin.Url("127.0.0.1", "/slow"), "timed out after 500 ms");
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  // Refusals held nothing: no call in flight, and the next request is served.
  CHECK(server.WaitForMetric("blip2_calls_in_flight", 0) == 0);
  CHECK_THAT(Exchange(port, Post("/v1/chat/completions", ChatBody("blip2-tiny-opt", 2, false))),
             Catch::StartsWith("HTTP/1.1 200"));
}

TEST_CASE("image URLs: a host resolving to a loopback or private address is refused unless allowed") {
  Origin origin;
  TestServer server(UrlConfig(/*allow_private=*/false));
  const int port = server.server().http_port();
  ExpectRefused(port, origin.Url("127.0.0.1", "/cat.jpg"), "127.0.0.1, which is not a public address");
  // A name is judged by the address it resolves to (/etc/hosts: loopback).
  ExpectRefused(port, origin.Url("localhost", "/cat.jpg"), "not a public address");
  CHECK(origin.requests() == 0);  // nothing reached the origin
}

}  // namespace
}  // namespace blip2::testing
