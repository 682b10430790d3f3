// Image registrations of one checkpoint, counted and leased: every
// RegisterImage adds a lease on the image's content hash (so two clients that
// register the same picture share one id), every ReleaseImage removes one,
// and a lease not released by its expiry lapses; the image leaves when its
// last lease goes. A client that forgets to release therefore holds a slot of
// max_registered_images only until its lease expires, and one client's
// release never pulls an image from under another holder. Torch-free; the
// engine calls it under its mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace blip2::engine {

class Registrations {
 public:
  using Clock = std::chrono::steady_clock;

  // One more lease on `key`, until `expires`.
  void Add(uint64_t key, Clock::time_point expires);
  // Removes one lease on `key`: the one that expires first, so the image
  // still lives as long as the longest lease left (whoever releases, no
  // remaining holder loses it early). Returns whether that was the last
  // lease (the image leaves); NOT_FOUND when `key` has none.
  absl::StatusOr<bool> Remove(uint64_t key);
  // Drops every lease expired at `now`. Returns the keys whose last lease went;
  // `*expired` grows by the number of leases dropped.
  std::vector<uint64_t> Expire(Clock::time_point now, int64_t* expired);

  bool Contains(uint64_t key) const { return leases_.count(key) > 0; }
  int64_t images() const { return static_cast<int64_t>(leases_.size()); }
  int64_t leases() const { return static_cast<int64_t>(by_expiry_.size()); }
  // When the next lease expires (none: no leases).
  std::optional<Clock::time_point> next_expiry() const;

 private:
  std::map<uint64_t, std::multiset<Clock::time_point>> leases_;  // key -> its leases' expiries
  std::multiset<std::pair<Clock::time_point, uint64_t>> by_expiry_;
};

}  // namespace blip2::engine
