#include "server/grpc/admission_queue.h"

#include <cmath>
#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace blip2::server {
namespace {

constexpr size_t kRateWindow = 64;      // starts the drain rate averages over
constexpr size_t kRateMinSamples = 16;  // before which it is unknown

}  // namespace

int64_t AdmissionQueue::AheadOfLocked(int priority) const {
  int64_t ahead = 0;
  for (const auto& [key, entry] : waiting_) {
    if (key.first > priority) break;
    ++ahead;
  }
  return ahead;
}

double AdmissionQueue::DrainRateLocked() const {
  if (gaps_s_.size() < kRateMinSamples || gaps_sum_s_ <= 0) return 0;
  return static_cast<double>(gaps_s_.size()) / gaps_sum_s_;
}

absl::StatusOr<AdmissionQueue::Admitted> AdmissionQueue::Enter(int priority, int count) {
  Admitted out;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t total = static_cast<int64_t>(waiting_.size());
  // Less urgent requests, which this one may push out.
  const int64_t ahead = AheadOfLocked(priority);
  const int64_t sheddable = total - ahead;
  const int64_t over_count = total + count - options_.max_queued;
  if (over_count > sheddable) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the queue is full: ", total, " requests wait (max_queued_requests ", options_.max_queued, "), ", ahead,
        " of them as or more urgent than priority ", priority, "; retry later"));
  }
  // With a measured drain rate: a request may wait behind as many as start
  // within max_wait (`room`; the last of a batch counts; an empty queue
  // takes any batch).
  const double rate = DrainRateLocked();
  const bool bounded = options_.max_wait.count() > 0 && rate > 0;
  // (Whole requests, allowing for the rate's own rounding: 4.9999999 is 5.)
  const double room = std::floor(rate * std::chrono::duration<double>(options_.max_wait).count() + 1e-6);
  if (bounded && ahead > 0 && static_cast<double>(ahead + count - 1) > room) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server is at capacity: ", ahead, " requests as or more urgent than priority ", priority,
        " wait, about ", std::lround(1000.0 * static_cast<double>(ahead) / rate), " ms of work (it starts ",
        std::lround(rate), " requests/s; max_queue_wait_ms ", options_.max_wait.count(), "); retry later"));
  }
  for (int i = 0; i < count; ++i) {
    const Ticket ticket = next_ticket_++;
    waiting_.emplace(Key{priority, ticket}, Entry{});
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
  if (waiting_.empty()) backlogged_ = false;
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
  waiting_.erase(Key{p->second, ticket});
  priority_of_.erase(p);
  if (started) {
    if (backlogged_) {
      const double gap = std::chrono::duration<double>(now - last_start_).count();
      gaps_s_.push_back(gap);
      gaps_sum_s_ += gap;
      if (gaps_s_.size() > kRateWindow) {
        gaps_sum_s_ -= gaps_s_.front();
        gaps_s_.pop_front();
      }
    }
    last_start_ = now;
    backlogged_ = !waiting_.empty();
  } else if (waiting_.empty()) {
    backlogged_ = false;  // idle from here: the next gap would count it
  }
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
