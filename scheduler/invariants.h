// Checks of the scheduler's invariants (listed in scheduler.h), for tests and
// debugging. Each returns what is violated, empty when all hold. Pure
// bookkeeping, no side effects; O(sequences + blocks) per call.
#pragma once

#include <string>
#include <vector>

#include "scheduler/scheduler.h"

namespace blip2::scheduler {

struct Violation {
  std::string invariant;  // a short name, the same for every breach of one invariant
  std::string detail;     // which ids and blocks
};

// The invariants of one step's output, S1-S5 in scheduler.h. Call it right
// after `scheduler.Schedule()` returned `out`, before `Update`.
std::vector<Violation> StepViolations(const Scheduler& scheduler, const SchedulerOutput& out);

// The invariants of the scheduler's state, B1-B3 and Q1-Q2 in scheduler.h;
// they hold after every Schedule and every Update.
std::vector<Violation> StateViolations(const Scheduler& scheduler);

}  // namespace blip2::scheduler
