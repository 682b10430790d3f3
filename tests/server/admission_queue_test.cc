// The admission queue's rules on a hand-driven clock: the count bound, the
// measured drain rate and the wait bound, and which requests are shed.
#include "server/grpc/admission_queue.h"

#include <string>
#include <vector>

#include "tests/catch.h"

namespace blip2::testing {
namespace {

using server::AdmissionQueue;
using Clock = AdmissionQueue::Clock;
using std::chrono::milliseconds;

// Enters one request; every arrival is at `now` unless a test says otherwise
// (the age rule compares arrivals only).
AdmissionQueue::Ticket One(AdmissionQueue& queue, int priority, std::vector<std::string>* shed_log = nullptr,
                           const std::string& name = "", Clock::time_point now = {}) {
  auto admitted = queue.Enter(priority, 1, now);
  REQUIRE(admitted.ok());
  REQUIRE(admitted->tickets.size() == 1);
  for (auto& shed : admitted->shed) shed();
  const AdmissionQueue::Ticket ticket = admitted->tickets[0];
  if (shed_log != nullptr) {
    REQUIRE(queue.OnShed(ticket, [shed_log, name] { shed_log->push_back(name); }));
  }
  return ticket;
}

// Starts `n` requests 10 ms apart from `t`, the queue never empty meanwhile:
// it measures 100 starts/s. Returns the time of the last start (empty again).
Clock::time_point DrainAt100PerSecond(AdmissionQueue& queue, Clock::time_point t, int n) {
  AdmissionQueue::Ticket waiting = One(queue, 0, nullptr, "", t);
  for (int i = 1; i < n; ++i) {
    const AdmissionQueue::Ticket next = One(queue, 0, nullptr, "", t);
    t += milliseconds(10);
    queue.Leave(waiting, /*started=*/true, t);
    waiting = next;
  }
  t += milliseconds(10);
  queue.Leave(waiting, /*started=*/true, t);
  return t;
}

TEST_CASE("admission: at max_queued a newcomer is refused at once unless less urgent requests wait") {
  AdmissionQueue queue({/*max_queued=*/3, milliseconds(0)});
  std::vector<std::string> shed;
  One(queue, 5, &shed, "a5");
  One(queue, 5, &shed, "b5");
  One(queue, 1, &shed, "c1");
  auto refused = queue.Enter(5, 1, {});
  REQUIRE(absl::IsResourceExhausted(refused.status()));
  CHECK(std::string(refused.status().message()).find("max_queued_requests 3") != std::string::npos);
  CHECK(queue.size() == 3);

  // Priority 0 pushes out the least urgent, newest request: b5.
  One(queue, 0, &shed, "d0");
  CHECK(shed == std::vector<std::string>{"b5"});
  CHECK(queue.size() == 3);
  CHECK(queue.shed_total() == 1);
  // Priority 1 still finds a less urgent one (a5); then nobody is.
  One(queue, 1, &shed, "e1");
  CHECK(shed == std::vector<std::string>{"b5", "a5"});
  CHECK(absl::IsResourceExhausted(queue.Enter(1, 1, {}).status()));  // never shed for its own priority
  CHECK(absl::IsResourceExhausted(queue.Enter(3, 1, {}).status()));
  CHECK(queue.size() == 3);
  CHECK(queue.shed_total() == 2);
}

TEST_CASE("admission: a batch enters whole or not at all") {
  AdmissionQueue queue({/*max_queued=*/4, milliseconds(0)});
  One(queue, 0);
  One(queue, 0);
  One(queue, 0);
  CHECK(absl::IsResourceExhausted(queue.Enter(0, 2, {}).status()));
  CHECK(queue.size() == 3);
  auto two = queue.Enter(0, 1, {});
  REQUIRE(two.ok());
  CHECK(queue.size() == 4);
}

TEST_CASE("admission: the drain rate is starts per second of queue time, following the load, kept while idle") {
  AdmissionQueue queue({/*max_queued=*/100, milliseconds(50)});
  Clock::time_point t{};
  CHECK(queue.drain_rate() == 0);
  // Twenty starting at one instant say nothing: no time behind them.
  AdmissionQueue one_step({/*max_queued=*/100, milliseconds(50)});
  std::vector<AdmissionQueue::Ticket> step;
  for (int i = 0; i < 20; ++i) step.push_back(One(one_step, 0, nullptr, "", t));
  for (auto ticket : step) one_step.Leave(ticket, /*started=*/true, t);
  CHECK(one_step.drain_rate() == 0);
  // Nor do a few starts (under 8).
  t = DrainAt100PerSecond(queue, t + milliseconds(5000), 5);
  CHECK(queue.drain_rate() == 0);
  // Enough of them: the rate; idle time between does not count.
  t = DrainAt100PerSecond(queue, t + milliseconds(5000), 40);
  CHECK(queue.drain_rate() == Approx(100).epsilon(0.02));
  t = DrainAt100PerSecond(queue, t + milliseconds(200), 20);
  CHECK(queue.drain_rate() == Approx(100).epsilon(0.02));
  // A slower pace takes over within seconds (20 starts/s).
  AdmissionQueue::Ticket waiting = One(queue, 0, nullptr, "", t);
  for (int i = 0; i < 100; ++i) {
    const AdmissionQueue::Ticket next = One(queue, 0, nullptr, "", t);
    t += milliseconds(50);
    queue.Leave(waiting, /*started=*/true, t);
    waiting = next;
  }
  CHECK(queue.drain_rate() == Approx(20).epsilon(0.05));
  // A request that fails before it starts is not a start.
  const double before = queue.drain_rate();
  t += milliseconds(10);
  queue.Leave(waiting, /*started=*/false, t);
  CHECK(queue.drain_rate() < before);
  // Idle time changes nothing: a burst after a quiet spell is judged by the last rate.
  const double last = queue.drain_rate();
  CHECK(queue.Enter(0, 1, t + milliseconds(60000)).ok());
  CHECK(queue.drain_rate() == last);
}

TEST_CASE("admission: with max_wait, only what drains in that time waits, and lower priorities go first") {
  AdmissionQueue queue({/*max_queued=*/100, milliseconds(50)});
  Clock::time_point t{};
  // Before a rate is measured only max_queued (and the age rule) applies.
  for (int i = 0; i < 8; ++i) One(queue, 0);
  CHECK(queue.size() == 8);
  AdmissionQueue fresh({/*max_queued=*/100, milliseconds(50)});
  t = DrainAt100PerSecond(fresh, t, 40);  // 100/s: 5 requests start in 50 ms
  std::vector<std::string> shed;
  // Up to 5 may wait ahead of a newcomer: 6 in all.
  for (int i = 0; i < 6; ++i) One(fresh, 3, &shed, "p3-" + std::to_string(i), t);
  auto refused = fresh.Enter(3, 1, t);
  REQUIRE(absl::IsResourceExhausted(refused.status()));
  CHECK(std::string(refused.status().message()).find("max_queue_wait_ms 50") != std::string::npos);
  CHECK(std::string(refused.status().message()).find("about 60 ms of work") != std::string::npos);
  // A priority 0 request has nobody ahead: admitted, and the newest p3 goes.
  One(fresh, 0, &shed, "p0-0", t);
  CHECK(shed == std::vector<std::string>{"p3-5"});
  CHECK(fresh.size() == 6);
  // Priority 0 keeps coming: p3 is shed before any p0 is refused.
  for (int i = 1; i < 6; ++i) One(fresh, 0, &shed, "p0-" + std::to_string(i), t);
  CHECK(shed.size() == 6);
  CHECK(fresh.size() == 6);
  CHECK(absl::IsResourceExhausted(fresh.Enter(0, 1, t).status()));
  CHECK(fresh.shed_total() == 6);
  // An empty queue always admits (a batch larger than the room included).
  AdmissionQueue empty({/*max_queued=*/100, milliseconds(50)});
  t = DrainAt100PerSecond(empty, t, 40);
  auto batch = empty.Enter(2, 20, t);
  REQUIRE(batch.ok());
  CHECK(batch->tickets.size() == 20);
}

TEST_CASE("admission: requests prepared side by side do not count as waiting") {
  // Two preprocessing threads: a newcomer may have one more ahead than the rate alone allows.
  AdmissionQueue queue({/*max_queued=*/100, milliseconds(50), /*side_by_side=*/2});
  Clock::time_point t = DrainAt100PerSecond(queue, {}, 40);  // 100/s: 5 start in 50 ms
  for (int i = 0; i < 7; ++i) One(queue, 0, nullptr, "", t);
  auto refused = queue.Enter(0, 1, t);
  REQUIRE(absl::IsResourceExhausted(refused.status()));
  CHECK(std::string(refused.status().message()).find("7 requests as or more urgent") != std::string::npos);
}

TEST_CASE("admission: before a rate is known, one waiting longer than max_wait refuses newcomers behind it") {
  AdmissionQueue queue({/*max_queued=*/100, milliseconds(50)});
  const Clock::time_point t0{};
  One(queue, 3, nullptr, "", t0);
  One(queue, 3, nullptr, "", t0 + milliseconds(40));  // the oldest has waited 40 ms: fine
  auto refused = queue.Enter(3, 1, t0 + milliseconds(51));
  REQUIRE(absl::IsResourceExhausted(refused.status()));
  CHECK(std::string(refused.status().message()).find("has waited 51 ms (max_queue_wait_ms 50)") != std::string::npos);
  // Nobody urgent enough is behind: priority 0 gets in, and so does anyone into an empty queue.
  CHECK(queue.Enter(0, 1, t0 + milliseconds(51)).ok());
  AdmissionQueue empty({/*max_queued=*/100, milliseconds(50)});
  CHECK(empty.Enter(3, 1, t0 + milliseconds(1000)).ok());
}

TEST_CASE("admission: a request shed before it registered learns so, and leaving after shed is ignored") {
  AdmissionQueue queue({/*max_queued=*/1, milliseconds(0)});
  auto low = queue.Enter(4, 1, {});
  REQUIRE(low.ok());
  auto high = queue.Enter(0, 1, {});  // pushes out `low` before it called OnShed
  REQUIRE(high.ok());
  CHECK(high->shed.empty());
  CHECK_FALSE(queue.OnShed(low->tickets[0], [] {}));
  queue.Leave(low->tickets[0], /*started=*/false, Clock::now());
  CHECK(queue.size() == 1);
  queue.Leave(high->tickets[0], /*started=*/true, Clock::now());
  CHECK(queue.size() == 0);
}

}  // namespace
}  // namespace blip2::testing
