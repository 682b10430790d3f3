// The admission queue: engine requests admitted and not yet generating (from
// the call's arrival to its first token), and the rules that keep the promise
// made to an admitted request under overload.
//
// - At most `max_queued` requests wait; with `max_wait` set, at most as many
//   as the server starts in that time (plus `side_by_side` - 1, those it
//   prepares alongside the newcomer) wait ahead of a newcomer, so an
//   admitted request starts within about `max_wait` however much more is
//   offered. (The queue holds requests from arrival to first token, so a
//   request's own preparation and prefill count as waiting for those behind
//   it.)
// - Before a drain rate is known (the first moments of a burst), a newcomer
//   is refused while one as or more urgent has waited longer than
//   `max_wait` (the server is behind).
// - A request that does not fit is refused at once (RESOURCE_EXHAUSTED),
//   unless less urgent requests (a larger priority value) are waiting: then
//   the least urgent, newest of them are shed instead (they end with
//   RESOURCE_EXHAUSTED), so lower priorities are shed first and priority 0
//   keeps its latency. A request is never shed for one of its own priority.
//
// The drain rate is measured, not configured: requests started per second of
// time the queue was not empty (an idle server's time says nothing), both
// decayed over about a second of such time (idle time keeps the last rate).
// Until enough is seen (8 starts, over at least max_wait and 20 ms), only
// `max_queued` and the age rule apply. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "absl/status/statusor.h"

namespace blip2::server {

class AdmissionQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using Ticket = uint64_t;
  struct Options {
    int64_t max_queued = 512;
    std::chrono::milliseconds max_wait{0};  // 0: no wait bound
    // Requests the server prepares at once (its preprocessing threads): a
    // newcomer behind fewer than this many waits for none of them.
    int64_t side_by_side = 1;
  };
  // What Enter did: the tickets of the admitted requests, and the shed
  // functions of the requests it pushed out (run them: Enter has already
  // removed those requests).
  struct Admitted {
    std::vector<Ticket> tickets;
    std::vector<std::function<void()>> shed;
  };

  explicit AdmissionQueue(Options options) : options_(options) {}

  // Admits `count` requests of `priority` (lower is more urgent) as one
  // (a batch is all or nothing), or says why not: RESOURCE_EXHAUSTED.
  absl::StatusOr<Admitted> Enter(int priority, int count, Clock::time_point now);
  // What to call if the request is shed. False when it was shed already
  // (between Enter and this call): the owner must end it as shed.
  bool OnShed(Ticket ticket, std::function<void()> shed);
  // The request left the queue: `started` when it reached the model (its
  // first token, or its result), which measures the drain rate; otherwise
  // it failed or was cancelled first. Unknown tickets (shed) are ignored.
  void Leave(Ticket ticket, bool started, Clock::time_point now);

  int64_t size() const;
  // Requests started per second of queue time; 0 until measured.
  double drain_rate() const;
  int64_t shed_total() const;

 private:
  struct Entry {
    std::function<void()> shed;  // empty until OnShed
    Clock::time_point arrived;
  };
  struct Ahead {
    int64_t count = 0;
    Clock::time_point oldest;  // the earliest arrival among them
  };
  // Urgency order: priority, then arrival (tickets rise with arrival).
  using Key = std::pair<int, Ticket>;

  Ahead AheadOfLocked(int priority) const;  // waiting at `priority` or more urgent
  double DrainRateLocked() const;

  const Options options_;
  mutable std::mutex mu_;
  std::map<Key, Entry> waiting_;
  std::map<Ticket, int> priority_of_;
  std::set<Ticket> shed_early_;  // shed before their OnShed
  Ticket next_ticket_ = 1;
  int64_t shed_total_ = 0;
  // The drain rate: starts per second of time with requests in the queue
  // (both sums decayed over that time, so it follows the current load).
  void AdvanceLocked(Clock::time_point now);
  double starts_ = 0;
  double busy_s_ = 0;
  Clock::time_point last_event_{};
};

}  // namespace blip2::server
