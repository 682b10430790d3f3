// Counted, leased image registrations (engine/runtime/registrations.h).
#include "engine/runtime/registrations.h"
#include "tests/catch.h"

namespace blip2::engine {
namespace {

using Clock = Registrations::Clock;
using std::chrono::seconds;

TEST_CASE("registrations: each register adds a lease, each release removes one, the image leaves with the last") {
  Registrations r;
  const Clock::time_point t0 = Clock::now();
  r.Add(7, t0 + seconds(10));
  r.Add(7, t0 + seconds(20));
  r.Add(9, t0 + seconds(5));
  CHECK(r.images() == 2);
  CHECK(r.leases() == 3);
  auto first = r.Remove(7);
  REQUIRE(first.ok());
  CHECK_FALSE(*first);  // another lease holds it
  CHECK(r.Contains(7));
  auto second = r.Remove(7);
  REQUIRE(second.ok());
  CHECK(*second);  // the last
  CHECK_FALSE(r.Contains(7));
  CHECK(absl::IsNotFound(r.Remove(7).status()));
  CHECK(r.leases() == 1);
}

TEST_CASE("registrations: a release takes the lease that ends first, so remaining holders keep the longest") {
  Registrations r;
  const Clock::time_point t0 = Clock::now();
  r.Add(1, t0 + seconds(3600));  // a long-lived holder
  r.Add(1, t0 + seconds(10));    // a short one
  REQUIRE(r.Remove(1).ok());     // whoever releases
  int64_t expired = 0;
  CHECK(r.Expire(t0 + seconds(100), &expired).empty());  // the long lease is what is left
  CHECK(expired == 0);
  CHECK(r.next_expiry() == t0 + seconds(3600));
}

TEST_CASE("registrations: leases lapse at their expiry, and an image goes when its last one does") {
  Registrations r;
  const Clock::time_point t0 = Clock::now();
  r.Add(1, t0 + seconds(1));
  r.Add(2, t0 + seconds(1));
  r.Add(2, t0 + seconds(3));
  CHECK(r.next_expiry() == t0 + seconds(1));
  int64_t expired = 0;
  CHECK(r.Expire(t0, &expired).empty());
  const std::vector<uint64_t> gone = r.Expire(t0 + seconds(2), &expired);
  CHECK(gone == std::vector<uint64_t>{1});
  CHECK(expired == 2);
  CHECK(r.Contains(2));
  CHECK(r.Expire(t0 + seconds(3), &expired) == std::vector<uint64_t>{2});
  CHECK(expired == 3);
  CHECK(r.leases() == 0);
  CHECK_FALSE(r.next_expiry().has_value());
}

}  // namespace
}  // namespace blip2::engine
