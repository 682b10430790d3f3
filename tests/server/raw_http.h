// Raw HTTP/1.1 over a socket for the HTTP API tests: a client connection that
// reads exactly what the server sent, and the request bodies they post.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "tests/catch.h"
#include "tests/server/server_fixture.h"

namespace blip2::testing {

// A connected socket to 127.0.0.1:port, closed when destroyed.
class Connection {
 public:
  explicit Connection(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  }
  ~Connection() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void Send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may answer (413) and close before reading it all
      sent += static_cast<size_t>(n);
    }
  }
  // Reads until `marker` has appeared `count` times in all that was read, or
  // the server closes.
  std::string ReadUntilCount(const std::string& marker, int count) {
    char buf[4096];
    while (true) {
      int seen = 0;
      for (size_t at = received_.find(marker); at != std::string::npos; at = received_.find(marker, at + 1)) ++seen;
      if (seen >= count) return received_;
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return received_;
      received_.append(buf, static_cast<size_t>(n));
    }
  }
  // Reads until `until` appears in what was read, or the server closes.
  std::string ReadUntil(const std::string& until) {
    char buf[4096];
    while (received_.find(until) == std::string::npos) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      received_.append(buf, static_cast<size_t>(n));
    }
    return received_;
  }

 private:
  int fd_;
  std::string received_;
};

inline std::string Post(const std::string& path, const std::string& body, const std::string& extra_headers = "") {
  return absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n",
                      extra_headers, "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

// A caption request for the model folder `model` (its name is the model's).
inline std::string ChatBody(const std::string& model, int max_tokens, bool stream) {
  const std::string image = absl::Base64Escape(ImageBytes("chelsea.jpg"));
  return absl::StrCat(R"({"model": ")", model, R"(", "max_tokens": )", max_tokens, R"(, "min_tokens": )", max_tokens,
                      R"(, "stream": )", stream ? "true" : "false",
                      R"(, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,)",
                      image, R"("}}]}]})");
}

// A caption request whose image is `url` (any scheme).
inline std::string ChatBodyWithUrl(const std::string& model, int max_tokens, const std::string& url) {
  return absl::StrCat(R"({"model": ")", model, R"(", "max_tokens": )", max_tokens, R"(, "min_tokens": )", max_tokens,
                      R"(, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ")",
                      url, R"("}}]}]})");
}

// One request on a fresh connection (Connection: close): all the server sent.
inline std::string Exchange(int port, const std::string& request) {
  Connection c(port);
  c.Send(request);
  return c.ReadUntil("\x01never\x01");  // until the server closes
}

}  // namespace blip2::testing
