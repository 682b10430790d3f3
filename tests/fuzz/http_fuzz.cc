// The HTTP API's request path before the engine: raw bytes through Beast's
// request parser (with the server's body limit), then, by path, the chat and
// embeddings JSON bodies, data: URLs and image URL checks. The first byte
// chooses between a whole raw request and a bare JSON body.
#include <utility>  // before Boost 1.74's asio, which needs std::exchange under C++20

#include <boost/beast/http.hpp>

#include "server/http/image_fetch.h"
#include "server/http/openai_api.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace http = boost::beast::http;

void Body(const std::string& path, const std::string& body) {
  if (path == "/v1/embeddings") {
    (void)blip2::server::ParseEmbeddingsRequest(body);
    return;
  }
  auto chat = blip2::server::ParseChatRequest(body);
  if (!chat.ok()) return;
  blip2::server::ImageUrlPolicy policy;
  policy.allowed_domains = {"images.example.com", "*.cdn.example.org"};
  if (chat->image_url.rfind("data:", 0) == 0) {
    (void)blip2::server::DecodeDataUrl(chat->image_url, "url");
  } else {
    (void)blip2::server::CheckImageUrl(chat->image_url, policy, "url");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest = blip2::fuzz::Bytes(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    Body(data[0] % 4 == 0 ? "/v1/chat/completions" : "/v1/embeddings", std::string(rest));
    return 0;
  }
  http::request_parser<http::string_body> parser;
  parser.body_limit(1 << 20);
  parser.eager(true);
  boost::beast::error_code ec;
  size_t used = 0;
  while (used < rest.size() && !parser.is_done()) {
    const size_t n = parser.put(boost::asio::buffer(rest.data() + used, rest.size() - used), ec);
    if (ec == http::error::need_more) break;
    if (ec) return 0;
    if (n == 0) break;
    used += n;
  }
  if (!parser.is_done()) return 0;
  const auto& request = parser.get();
  const std::string target(request.target());
  Body(target.substr(0, target.find('?')), request.body());
  return 0;
}
