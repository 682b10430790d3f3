#include "engine/runtime/registrations.h"

namespace blip2::engine {

void Registrations::Add(uint64_t key, Clock::time_point expires) {
  leases_[key].insert(expires);
  by_expiry_.emplace(expires, key);
}

absl::StatusOr<bool> Registrations::Remove(uint64_t key) {
  auto it = leases_.find(key);
  if (it == leases_.end()) return absl::NotFoundError("the image is not registered");
  const Clock::time_point first = *it->second.begin();
  it->second.erase(it->second.begin());
  by_expiry_.erase(by_expiry_.find({first, key}));
  if (!it->second.empty()) return false;
  leases_.erase(it);
  return true;
}

std::vector<uint64_t> Registrations::Expire(Clock::time_point now, int64_t* expired) {
  std::vector<uint64_t> gone;
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
    const auto [at, key] = *by_expiry_.begin();
    by_expiry_.erase(by_expiry_.begin());
    auto it = leases_.find(key);
    it->second.erase(it->second.find(at));
    ++*expired;
    if (it->second.empty()) {
      leases_.erase(it);
      gone.push_back(key);
    }
  }
  return gone;
}

std::optional<Registrations::Clock::time_point> Registrations::next_expiry() const {
  if (by_expiry_.empty()) return std::nullopt;
  return by_expiry_.begin()->first;
}

}  // namespace blip2::engine
