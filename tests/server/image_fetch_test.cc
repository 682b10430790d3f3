// The image URL policy (server/http/image_fetch.h) without a network: which
// URLs may be fetched and which addresses count as public. The fetch itself
// is tested against a local origin in http_api_test.cc.
#include <boost/asio/ip/address.hpp>

#include "server/http/image_fetch.h"
#include "tests/catch.h"

namespace blip2::server {
namespace {

ImageUrlPolicy Allowing(std::vector<std::string> domains) {
  ImageUrlPolicy p;
  p.allowed_domains = std::move(domains);
  return p;
}

void Refused(const std::string& url, const ImageUrlPolicy& policy, const std::string& what) {
  const auto checked = CheckImageUrl(url, policy, "url");
  INFO(url);
  CHECK(absl::IsInvalidArgument(checked.status()));
  CHECK_THAT(std::string(checked.status().message()), Catch::Contains(what));
}

TEST_CASE("image urls: scheme, host, port and target are checked against the allowed domains") {
  const ImageUrlPolicy policy = Allowing({"images.example.com", "*.cdn.example.org"});
  auto ok = CheckImageUrl("https://Images.Example.com./cats/1.jpg?size=2#frag", policy, "url");
  REQUIRE(ok.ok());
  CHECK(ok->https);
  CHECK(ok->host == "images.example.com");
  CHECK(ok->port == "443");
  CHECK(ok->target == "/cats/1.jpg?size=2");
  auto sub = CheckImageUrl("http://a.b.cdn.example.org:8080", policy, "url");
  REQUIRE(sub.ok());
  CHECK(sub->port == "8080");
  CHECK(sub->target == "/");
  Refused("ftp://images.example.com/x.jpg", policy, "scheme \"ftp\"");
  Refused("file:///etc/passwd", policy, "scheme \"file\"");
  Refused("https://evil.com/x.jpg", policy, "\"evil.com\" is not in image_urls.allowed_domains");
  Refused("https://cdn.example.org/x.jpg", policy, "not in image_urls.allowed_domains");  // "*." needs a subdomain
  Refused("https://images.example.com.evil.com/x.jpg", policy, "not in image_urls.allowed_domains");
  Refused("https://user:pw@images.example.com/x.jpg", policy, "user information");
  Refused("https://images.example.com:99999/x.jpg", policy, "not a port number");
  Refused("https://images.example.com/a b.jpg", policy, "space or control");
  Refused("https:///x.jpg", policy, "no host");
  Refused("https://images.example.com/x.jpg", Allowing({}), "image_urls.allowed_domains is empty");
  auto v6 = CheckImageUrl("http://[::1]:81/x", Allowing({"::1"}), "url");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  CHECK(v6->port == "81");
}

TEST_CASE("image urls: only public addresses are public") {
  const auto is_public = [](const char* a) { return IsPublicAddress(boost::asio::ip::make_address(a)); };
  for (const char* a : {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
                        "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1", "::1",
                        "::", "fe80::1", "fc00::1", "fd12::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                        "64:ff9b::a00:1", "2002:a00:1::1", "2001:db8::1", "2001::1"}) {
    INFO(a);
    CHECK_FALSE(is_public(a));
  }
  for (const char* a : {"8.8.8.8", "1.1.1.1", "172.32.0.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8",
                        "64:ff9b::808:808"}) {
    INFO(a);
    CHECK(is_public(a));
  }
}

}  // namespace
}  // namespace blip2::server
