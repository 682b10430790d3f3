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

AdmissionQueue::Ticket One(AdmissionQueue& queue, int priority, std::vector<std::string>* shed_log = nullptr,
                           const std::string& name = "") {
  auto admitted = queue.Enter(priority, 1);
  REQUIRE(admitted.ok());
  REQUIRE(admitted->tickets.size() == 1);
  for (auto& shed : admitted->shed) shed();
  const AdmissionQueue::Ticket ticket = admitted->tickets[0];
  if (shed_log != nullptr) {
    REQUIRE(queue.OnShed(ticket, [shed_log, name] { shed_log->push_back(name); }));
  }
  return ticket;
}

// Starts `n` requests 10 ms apart with one more always waiting: the queue
// measures 100 starts/s.
Clock::time_point DrainAt100PerSecond(AdmissionQueue& queue, Clock::time_point t, int n) {
  AdmissionQueue::Ticket waiting = One(queue, 0);
  for (int i = 0; i < n; ++i) {
    const AdmissionQueue::Ticket next = One(queue, 0);
    t += milliseconds(10);
    queue.Leave(waiting, /*started=*/true, t);
    waiting = next;
  }
  t += milliseconds(10);
  queue.Leave(waiting, /*started=*/true, t);  // empty again
  return t;
}

TEST_CASE("admission: at max_queued a newcomer is refused at once unless less urgent requests wait") {
  AdmissionQueue queue({/*max_queued=*/3, milliseconds(0)});
  std::vector<std::string> shed;
  One(queue, 5, &shed, "a5");
  One(queue, 5, &shed, "b5");
  One(queue, 1, &shed, "c1");
  auto refused = queue.Enter(5, 1);
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
  CHECK(absl::IsResourceExhausted(queue.Enter(1, 1).status()));  // never shed for its own priority
  CHECK(absl::IsResourceExhausted(queue.Enter(3, 1).status()));
  CHECK(queue.size() == 3);
  CHECK(queue.shed_total() == 2);
}

TEST_CASE("admission: a batch enters whole or not at all") {
  AdmissionQueue queue({/*max_queued=*/4, milliseconds(0)});
  One(queue, 0);
  One(queue, 0);
  One(queue, 0);
  CHECK(absl::IsResourceExhausted(queue.Enter(0, 2).status()));
  CHECK(queue.size() == 3);
  auto two = queue.Enter(0, 1);
  REQUIRE(two.ok());
  CHECK(queue.size() == 4);
}

TEST_CASE("admission: the drain rate counts only starts made while others waited") {
  AdmissionQueue queue({/*max_queued=*/100, milliseconds(50)});
  Clock::time_point t{};
  CHECK(queue.drain_rate() == 0);
  // Requests one at a time, 1 s apart: an idle server's pace says nothing.
  for (int i = 0; i < 40; ++i) {
    const auto ticket = One(queue, 0);
    t += milliseconds(1000);
    queue.Leave(ticket, /*started=*/true, t);
  }
  CHECK(queue.drain_rate() == 0);
  // Nor do requests that fail or are cancelled before they start.
  t = DrainAt100PerSecond(queue, t, 10);
  CHECK(queue.drain_rate() == 0);  // 10 samples: not enough yet
  t = DrainAt100PerSecond(queue, t, 30);
  CHECK(queue.drain_rate() == Approx(100).epsilon(1e-6));
  // An idle second between two busy stretches is not counted.
  t += milliseconds(1000);
  t = DrainAt100PerSecond(queue, t, 5);
  CHECK(queue.drain_rate() == Approx(100).epsilon(1e-6));
  // Failures do not count either.
  const auto failed = One(queue, 0);
  const auto behind = One(queue, 0);
  queue.Leave(failed, /*started=*/false, t + milliseconds(1));
  queue.Leave(behind, /*started=*/false, t + milliseconds(2));
  CHECK(queue.drain_rate() == Approx(100).epsilon(1e-6));
}

TEST_CASE("admission: with max_wait, only what drains in that time waits, and lower priorities go first") {
  AdmissionQueue queue({/*max_queued=*/100, milliseconds(50)});
  Clock::time_point t{};
  // Before a rate is measured only max_queued applies.
  for (int i = 0; i < 8; ++i) One(queue, 0);
  CHECK(queue.size() == 8);
  AdmissionQueue fresh({/*max_queued=*/100, milliseconds(50)});
  t = DrainAt100PerSecond(fresh, t, 40);  // 100/s: 5 requests start in 50 ms
  std::vector<std::string> shed;
  // Up to 5 may wait ahead of a newcomer: 6 in all.
  for (int i = 0; i < 6; ++i) One(fresh, 3, &shed, "p3-" + std::to_string(i));
  auto refused = fresh.Enter(3, 1);
  REQUIRE(absl::IsResourceExhausted(refused.status()));
  CHECK(std::string(refused.status().message()).find("max_queue_wait_ms 50") != std::string::npos);
  CHECK(std::string(refused.status().message()).find("about 60 ms of work") != std::string::npos);
  // A priority 0 request has nobody ahead: admitted, and the newest p3 goes.
  One(fresh, 0, &shed, "p0-0");
  CHECK(shed == std::vector<std::string>{"p3-5"});
  CHECK(fresh.size() == 6);
  // Priority 0 keeps coming: p3 is shed before any p0 is refused.
  for (int i = 1; i < 6; ++i) One(fresh, 0, &shed, "p0-" + std::to_string(i));
  CHECK(shed.size() == 6);
  CHECK(fresh.size() == 6);
  CHECK(absl::IsResourceExhausted(fresh.Enter(0, 1).status()));
  CHECK(fresh.shed_total() == 6);
  // An empty queue always admits (a batch larger than the room included).
  AdmissionQueue empty({/*max_queued=*/100, milliseconds(50)});
  DrainAt100PerSecond(empty, t, 40);
  auto batch = empty.Enter(2, 20);
  REQUIRE(batch.ok());
  CHECK(batch->tickets.size() == 20);
}

TEST_CASE("admission: a request shed before it registered learns so, and leaving after shed is ignored") {
  AdmissionQueue queue({/*max_queued=*/1, milliseconds(0)});
  auto low = queue.Enter(4, 1);
  REQUIRE(low.ok());
  auto high = queue.Enter(0, 1);  // pushes out `low` before it called OnShed
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
