// http(s) image URLs for the HTTP API: which ones may be fetched (scheme,
// allowed domains, public addresses only) and the fetch itself (no
// redirects, a deadline over the whole fetch, a body cap), asynchronous on
// the caller's executor so an I/O thread never waits on a slow origin.
// Server-side request forgery is the classic hole of servers that fetch
// URLs for their clients; every rule here closes a part of it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>

#include "absl/status/statusor.h"
#include "server_config.pb.h"

namespace blip2::server {

struct ImageUrlPolicy {
  std::vector<std::string> allowed_domains;  // "host" or "*.domain"; empty: no URL is fetched
  std::chrono::milliseconds timeout{5000};
  int64_t max_bytes = 20 << 20;
  bool allow_private_addresses = false;
};
ImageUrlPolicy ImageUrlPolicyFromConfig(const config::ImageUrls& c);

struct ImageUrl {
  bool https = false;
  std::string host;    // lower case; no brackets
  std::string port;    // "80"/"443" when the URL has none
  std::string target;  // path and query, "/" at least
};

// Parses `url` and checks it against the policy (scheme, no user info, an
// allowed host). INVALID_ARGUMENT naming `field` and the rule broken.
absl::StatusOr<ImageUrl> CheckImageUrl(const std::string& url, const ImageUrlPolicy& policy, const std::string& field);

// Whether `host` is one of the allowed domains ("*.example.com" matches its
// subdomains, not example.com itself).
bool DomainAllowed(const std::string& host, const std::vector<std::string>& allowed);

// Whether an address belongs to the public internet: not loopback, private
// (RFC 1918, fc00::/7), link-local, shared (100.64/10), unspecified,
// multicast, broadcast, documentation or reserved; IPv4-mapped IPv6
// addresses are judged by their IPv4 address.
bool IsPublicAddress(const boost::asio::ip::address& address);

// Fetches the image body. `done` runs once, on `executor`, with the body or
// INVALID_ARGUMENT naming `field` and what went wrong (an address that is not
// public, a redirect, a status other than 200, a body over max_bytes, the
// timeout, a TLS certificate that does not verify, a connection error).
// `client_tls` verifies https origins (system CAs).
void FetchImage(const boost::asio::any_io_executor& executor, const ImageUrl& url, const ImageUrlPolicy& policy,
                std::shared_ptr<boost::asio::ssl::context> client_tls, const std::string& field,
                std::function<void(absl::StatusOr<std::string>)> done);

// A TLS client context that verifies servers against the system's CAs.
std::shared_ptr<boost::asio::ssl::context> MakeClientTlsContext();

}  // namespace blip2::server
