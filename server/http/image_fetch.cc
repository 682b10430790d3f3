#include "server/http/image_fetch.h"

#include <openssl/ssl.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace blip2::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

absl::Status Bad(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(field + ": " + problem);
}

bool InV4(uint32_t a, uint32_t net, int bits) {
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (a & mask) == (net & mask);
}

constexpr uint32_t V4(int a, int b, int c, int d) {
  return static_cast<uint32_t>(a) << 24 | static_cast<uint32_t>(b) << 16 | static_cast<uint32_t>(c) << 8 |
         static_cast<uint32_t>(d);
}

bool IsPublicV4(const net::ip::address_v4& address) {
  const uint32_t a = address.to_uint();
  static const struct { uint32_t net; int bits; } kNotPublic[] = {
      {V4(0, 0, 0, 0), 8},       {V4(10, 0, 0, 0), 8},     {V4(100, 64, 0, 0), 10}, {V4(127, 0, 0, 0), 8},
      {V4(169, 254, 0, 0), 16},  {V4(172, 16, 0, 0), 12},  {V4(192, 0, 0, 0), 24}, {V4(192, 0, 2, 0), 24},
      {V4(192, 88, 99, 0), 24},  {V4(192, 168, 0, 0), 16}, {V4(198, 18, 0, 0), 15}, {V4(198, 51, 100, 0), 24},
      {V4(203, 0, 113, 0), 24},  {V4(224, 0, 0, 0), 4},    {V4(240, 0, 0, 0), 4},
  };
  for (const auto& range : kNotPublic) {
    if (InV4(a, range.net, range.bits)) return false;
  }
  return true;
}

// The IPv4 address in bytes [at, at + 4) of an IPv6 address.
net::ip::address_v4 EmbeddedV4(const net::ip::address_v6::bytes_type& b, size_t at) {
  return net::ip::address_v4(net::ip::address_v4::bytes_type{b[at], b[at + 1], b[at + 2], b[at + 3]});
}

bool IsPublicV6(const net::ip::address_v6& address) {
  if (address.is_v4_mapped()) return IsPublicV4(address.to_v4());
  const net::ip::address_v6::bytes_type b = address.to_bytes();
  // NAT64 (64:ff9b::/96) carries an IPv4 address in its last four bytes.
  static const uint8_t kNat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::equal(kNat64, kNat64 + 12, b.begin())) return IsPublicV4(EmbeddedV4(b, 12));
  if ((b[0] & 0xe0) != 0x20) return false;  // only global unicast (2000::/3) is public
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return false;  // documentation
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00) return false;  // Teredo: hides its peer
  if (b[0] == 0x20 && b[1] == 0x02) return IsPublicV4(EmbeddedV4(b, 2));         // 6to4
  return true;
}

// One fetch: resolve, connect to public addresses only, (TLS), GET, read a
// capped body; a timer over the whole of it closes the socket when it fires.
template <class Stream>
class Fetch : public std::enable_shared_from_this<Fetch<Stream>> {
 public:
  template <class... StreamArgs>
  Fetch(const net::any_io_executor& executor, ImageUrl url, ImageUrlPolicy policy, std::string field,
        std::function<void(absl::StatusOr<std::string>)> done, StreamArgs&&... stream_args)
      : resolver_(executor),
        timer_(executor),
        stream_(std::forward<StreamArgs>(stream_args)...),
        url_(std::move(url)),
        policy_(std::move(policy)),
        field_(std::move(field)),
        done_(std::move(done)) {}

  void Start() {
    auto self = this->shared_from_this();
    timer_.expires_after(policy_.timeout);
    timer_.async_wait([self](beast::error_code ec) {
      if (ec) return;  // cancelled: the fetch ended first
      self->timed_out_ = true;
      self->resolver_.cancel();
      beast::error_code ignored;
      beast::get_lowest_layer(self->stream_).socket().close(ignored);
    });
    resolver_.async_resolve(url_.host, url_.port, [self](beast::error_code ec, tcp::resolver::results_type results) {
      self->OnResolved(ec, std::move(results));
    });
  }

 private:
  void OnResolved(beast::error_code ec, tcp::resolver::results_type results) {
    if (ec) return Fail(ec, "cannot resolve host \"" + url_.host + "\"");
    std::vector<tcp::endpoint> endpoints;
    std::string refused;
    for (const auto& entry : results) {
      if (policy_.allow_private_addresses || IsPublicAddress(entry.endpoint().address())) {
        endpoints.push_back(entry.endpoint());
      } else if (refused.empty()) {
        refused = entry.endpoint().address().to_string();
      }
    }
    if (endpoints.empty()) {
      return Finish(Bad(field_, absl::StrCat("host \"", url_.host, "\" resolves to ", refused,
                                             ", which is not a public address (image_urls.allow_private_addresses)")));
    }
    // Connect to the addresses just checked, never to a second resolution.
    auto self = this->shared_from_this();
    beast::get_lowest_layer(stream_).async_connect(
        endpoints, [self](beast::error_code ec, const tcp::endpoint&) { self->OnConnected(ec); });
  }

  void OnConnected(beast::error_code ec) {
    if (ec) return Fail(ec, "cannot connect to \"" + url_.host + ":" + url_.port + "\"");
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      if (!SSL_set_tlsext_host_name(stream_.native_handle(), url_.host.c_str())) {
        return Finish(Bad(field_, "cannot set the TLS server name"));
      }
      stream_.set_verify_callback(ssl::host_name_verification(url_.host));
      auto self = this->shared_from_this();
      stream_.async_handshake(ssl::stream_base::client, [self](beast::error_code ec) {
        if (ec) return self->Fail(ec, "TLS with \"" + self->url_.host + "\" failed");
        self->Send();
      });
    } else {
      Send();
    }
  }

  void Send() {
    request_ = {http::verb::get, url_.target, 11};
    request_.set(http::field::host, url_.host);
    request_.set(http::field::user_agent, "blip2-serve");
    request_.set(http::field::accept, "image/*");
    request_.keep_alive(false);
    auto self = this->shared_from_this();
    http::async_write(stream_, request_, [self](beast::error_code ec, size_t) {
      if (ec) return self->Fail(ec, "sending the request failed");
      self->parser_.body_limit(static_cast<uint64_t>(self->policy_.max_bytes));
      self->parser_.header_limit(16 * 1024);
      http::async_read_header(self->stream_, self->buffer_, self->parser_,
                              [self](beast::error_code ec, size_t) { self->OnHeader(ec); });
    });
  }

  absl::Status TooLarge() const {
    return Bad(field_, absl::StrCat("the image is larger than image_urls.max_bytes (", policy_.max_bytes, " bytes)"));
  }

  // The status and a declared length are judged before any body is read
  // (Boost 1.74's eager body reads do not apply body_limit to a body that
  // arrives with its header, so the length is checked here too).
  void OnHeader(beast::error_code ec) {
    if (ec == http::error::body_limit) return Finish(TooLarge());  // a declared length over the limit
    if (ec) return Fail(ec, "reading the response failed");
    auto& response = parser_.get();
    const unsigned status = response.result_int();
    if (status >= 300 && status < 400) {
      const auto location = response.find(http::field::location);
      return Finish(Bad(field_, absl::StrCat("the URL redirects (HTTP ", status,
                                             location == response.end() ? "" : " to " + std::string(location->value()),
                                             "); redirects are not followed, give the final URL")));
    }
    if (status != 200) return Finish(Bad(field_, absl::StrCat("fetching the image returned HTTP ", status)));
    const auto length = parser_.content_length();
    if (length && *length > static_cast<uint64_t>(policy_.max_bytes)) return Finish(TooLarge());
    auto self = this->shared_from_this();
    http::async_read(stream_, buffer_, parser_, [self](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) return Finish(TooLarge());
    if (ec) return Fail(ec, "reading the response failed");
    auto& response = parser_.get();
    if (response.body().size() > static_cast<size_t>(policy_.max_bytes)) return Finish(TooLarge());
    if (response.body().empty()) return Finish(Bad(field_, "the image URL returned no bytes"));
    Finish(std::move(response.body()));
  }

  void Fail(beast::error_code ec, const std::string& what) {
    if (timed_out_) {
      return Finish(Bad(field_, absl::StrCat("fetching the image timed out after ", policy_.timeout.count(),
                                             " ms (image_urls.timeout_ms)")));
    }
    Finish(Bad(field_, what + ": " + ec.message()));
  }

  void Finish(absl::StatusOr<std::string> result) {
    timer_.cancel();
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().close(ignored);
    if (done_) {
      auto done = std::move(done_);
      done_ = nullptr;
      done(std::move(result));
    }
  }

  tcp::resolver resolver_;
  net::steady_timer timer_;
  Stream stream_;
  ImageUrl url_;
  ImageUrlPolicy policy_;
  std::string field_;
  std::function<void(absl::StatusOr<std::string>)> done_;
  bool timed_out_ = false;
  http::request<http::empty_body> request_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
};

}  // namespace

ImageUrlPolicy ImageUrlPolicyFromConfig(const config::ImageUrls& c) {
  ImageUrlPolicy p;
  p.allowed_domains.assign(c.allowed_domains().begin(), c.allowed_domains().end());
  p.timeout = std::chrono::milliseconds(c.timeout_ms());
  p.max_bytes = c.max_bytes();
  p.allow_private_addresses = c.allow_private_addresses();
  return p;
}

bool DomainAllowed(const std::string& host, const std::vector<std::string>& allowed) {
  const std::string h = absl::AsciiStrToLower(host);
  for (const std::string& entry : allowed) {
    const std::string a = absl::AsciiStrToLower(entry);
    if (absl::StartsWith(a, "*.")) {
      if (h.size() > a.size() - 1 && absl::EndsWith(h, a.substr(1))) return true;
    } else if (h == a) {
      return true;
    }
  }
  return false;
}

bool IsPublicAddress(const net::ip::address& address) {
  return address.is_v4() ? IsPublicV4(address.to_v4()) : IsPublicV6(address.to_v6());
}

absl::StatusOr<ImageUrl> CheckImageUrl(const std::string& url, const ImageUrlPolicy& policy,
                                       const std::string& field) {
  ImageUrl out;
  const size_t scheme_end = url.find("://");
  const std::string scheme = absl::AsciiStrToLower(url.substr(0, std::min(scheme_end, url.find(':'))));
  if (scheme_end == std::string::npos || (scheme != "http" && scheme != "https")) {
    return Bad(field, "the scheme \"" + scheme.substr(0, 16) + "\" is not accepted (data:, or http(s) for allowed domains)");
  }
  if (policy.allowed_domains.empty()) {
    return Bad(field, "this server fetches no " + scheme +
                          " URLs (image_urls.allowed_domains is empty); send the image as a data: URL");
  }
  for (unsigned char c : url) {
    if (c <= 0x20 || c == 0x7f) return Bad(field, "the URL contains a space or control character");
  }
  out.https = scheme == "https";
  const std::string rest = url.substr(scheme_end + 3);
  const size_t authority_end = rest.find_first_of("/?#");
  const std::string authority = rest.substr(0, authority_end);
  if (authority.find('@') != std::string::npos) return Bad(field, "URLs with user information are not accepted");
  std::string port;
  if (absl::StartsWith(authority, "[")) {  // an IPv6 literal
    const size_t close = authority.find(']');
    if (close == std::string::npos) return Bad(field, "the URL's IPv6 host has no ']'");
    out.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return Bad(field, "the URL's host is malformed");
      port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  while (absl::EndsWith(out.host, ".")) out.host.pop_back();
  out.host = absl::AsciiStrToLower(out.host);
  if (out.host.empty()) return Bad(field, "the URL has no host");
  int port_number = 0;
  if (!port.empty() && (!absl::SimpleAtoi(port, &port_number) || port_number <= 0 || port_number > 65535)) {
    return Bad(field, "the URL's port \"" + port + "\" is not a port number");
  }
  out.port = port.empty() ? (out.https ? "443" : "80") : port;
  if (!DomainAllowed(out.host, policy.allowed_domains)) {
    return Bad(field, "the host \"" + out.host + "\" is not in image_urls.allowed_domains");
  }
  std::string target = authority_end == std::string::npos ? "/" : rest.substr(authority_end);
  target = target.substr(0, target.find('#'));
  if (target.empty() || target[0] != '/') target = "/" + target;
  out.target = target;
  return out;
}

void FetchImage(const net::any_io_executor& executor, const ImageUrl& url, const ImageUrlPolicy& policy,
                std::shared_ptr<ssl::context> client_tls, const std::string& field,
                std::function<void(absl::StatusOr<std::string>)> done) {
  if (url.https) {
    using TlsFetch = Fetch<beast::ssl_stream<beast::tcp_stream>>;
    // The context lives as long as the fetch: the callback holds it.
    auto fetch = std::make_shared<TlsFetch>(
        executor, url, policy, field,
        [tls = client_tls, done = std::move(done)](absl::StatusOr<std::string> r) { done(std::move(r)); }, executor,
        *client_tls);
    fetch->Start();
  } else {
    auto fetch = std::make_shared<Fetch<beast::tcp_stream>>(executor, url, policy, field, std::move(done), executor);
    fetch->Start();
  }
}

std::shared_ptr<ssl::context> MakeClientTlsContext() {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  context->set_default_verify_paths();
  context->set_verify_mode(ssl::verify_peer);
  return context;
}

}  // namespace blip2::server
