#include "server/grpc/admission_queue.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace blip2::server {
namespace {

// The drain rate forgets with this time constant, in seconds of time with
// requests waiting: an idle server keeps the last rate it measured, so a
// burst after a quiet spell is judged by it at once.
constexpr double kRateMemoryS = 1.0;
// It is unknown with fewer (decayed) starts than this behind it, or less
// (decayed) time with requests waiting than kRateMinBusyS and max_wait:
// starts come in batches (one step's at one instant), so a few say nothing.
constexpr double kRateMinStarts = 8;
constexpr double kRateMinBusyS = 0.02;

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

AdmissionQueue::Ahead AdmissionQueue::AheadOfLocked(int priority) const {
  Ahead ahead;
  for (const auto& [key, entry] : waiting_) {
    if (key.first > priority) break;
    ++ahead.count;
    if (ahead.count == 1 || entry.arrived < ahead.oldest) ahead.oldest = entry.arrived;
  }
  return ahead;
}

double AdmissionQueue::DrainRateLocked() const {
  if (starts_ < kRateMinStarts || busy_s_ < std::max(kRateMinBusyS, Seconds(options_.max_wait))) return 0;
  return starts_ / busy_s_;
}

void AdmissionQueue::AdvanceLocked(Clock::time_point now) {
  const double dt = std::max(0.0, Seconds(now - last_event_));
  last_event_ = now;
  if (waiting_.empty()) return;  // idle time neither counts nor ages the rate
  const double keep = std::exp(-dt / kRateMemoryS);
  starts_ *= keep;
  busy_s_ = busy_s_ * keep + dt;
}

absl::StatusOr<AdmissionQueue::Admitted> AdmissionQueue::Enter(int priority, int count, Clock::time_point now) {
  Admitted out;
  std::lock_guard<std::mutex> lock(mu_);
  AdvanceLocked(now);
  const int64_t total = static_cast<int64_t>(waiting_.size());
  // Less urgent requests, which this one may push out.
  const Ahead ahead_of = AheadOfLocked(priority);
  const int64_t ahead = ahead_of.count;
  const int64_t sheddable = total - ahead;
  const int64_t over_count = total + count - options_.max_queued;
  if (over_count > sheddable) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the queue is full: ", total, " requests wait (max_queued_requests ", options_.max_queued, "), ", ahead,
        " of them as or more urgent than priority ", priority, "; retry later"));
  }
  // With a measured drain rate: a request may wait behind as many as start
  // within max_wait, plus those the server works on side by side with it
  // (`room`; the last of a batch counts; an empty queue takes any batch).
  const double rate = DrainRateLocked();
  const bool bounded = options_.max_wait.count() > 0 && rate > 0;
  // Before a rate is known (the first moments of a burst): one waiting longer
  // than max_wait ahead of it says the server is behind.
  if (options_.max_wait.count() > 0 && !bounded && ahead > 0 && now - ahead_of.oldest > options_.max_wait) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server is at capacity: a request as or more urgent than priority ", priority, " has waited ",
        std::lround(1000 * Seconds(now - ahead_of.oldest)), " ms (max_queue_wait_ms ", options_.max_wait.count(),
        "); retry later"));
  }
  // (Whole requests, allowing for the rate's own rounding: 4.9999999 is 5.)
  const double room = std::floor(rate * Seconds(options_.max_wait) + 1e-6) + static_cast<double>(options_.side_by_side - 1);
  if (bounded && ahead > 0 && static_cast<double>(ahead + count - 1) > room) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server is at capacity: ", ahead, " requests as or more urgent than priority ", priority,
        " wait, about ", std::lround(1000.0 * static_cast<double>(ahead) / rate), " ms of work (it starts ",
        std::lround(rate), " requests/s; max_queue_wait_ms ", options_.max_wait.count(), "); retry later"));
  }
  for (int i = 0; i < count; ++i) {
    const Ticket ticket = next_ticket_++;
    waiting_.emplace(Key{priority, ticket}, Entry{{}, now});
    priority_of_.emplace(ticket, priority);
    out.tickets.push_back(ticket);
  }
  // Push out the least urgent (newest first among equals) while the queue is
  // over either bound; never one as urgent as the newcomer.
  auto over = [&] {
    const auto size = static_cast<double>(waiting_.size());
    return size > static_cast<double>(options_.max_queued) || (bounded && size - 1 > room);
  };
  while (over()) {
    auto last = std::prev(waiting_.end());
    if (last->first.first <= priority) break;
    const Ticket ticket = last->first.second;
    if (last->second.shed) {
      out.shed.push_back(std::move(last->second.shed));
    } else {
      shed_early_.insert(ticket);  // its OnShed will say so
    }
    waiting_.erase(last);
    priority_of_.erase(ticket);
    ++shed_total_;
  }
  return out;
}

bool AdmissionQueue::OnShed(Ticket ticket, std::function<void()> shed) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shed_early_.erase(ticket) > 0) return false;
  const auto p = priority_of_.find(ticket);
  if (p == priority_of_.end()) return true;  // already left
  waiting_.at(Key{p->second, ticket}).shed = std::move(shed);
  return true;
}

void AdmissionQueue::Leave(Ticket ticket, bool started, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  shed_early_.erase(ticket);
  const auto p = priority_of_.find(ticket);
  if (p == priority_of_.end()) return;  // shed
  AdvanceLocked(now);
  waiting_.erase(Key{p->second, ticket});
  priority_of_.erase(p);
  if (started) starts_ += 1;
}

int64_t AdmissionQueue::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(waiting_.size());
}

double AdmissionQueue::drain_rate() const {
  std::lock_guard<std::mutex> lock(mu_);
  return DrainRateLocked();
}

int64_t AdmissionQueue::shed_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shed_total_;
}

}  // namespace blip2::server
