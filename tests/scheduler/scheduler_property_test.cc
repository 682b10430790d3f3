// Property test of the LLM scheduler: thousands of random schedules (arrivals,
// priorities, prompt and output lengths, block sizes, KV budgets, step limits,
// watermarks, cancels, deadlines, stop ids), with every invariant of
// scheduler.h checked after every Schedule and Update, plus two that only a
// model sees:
//   R1  a sequence reads back exactly the KV it wrote: a fake KV memory
//       records which sequence wrote which position of which block slot, and
//       every step checks the positions a sequence attends to;
//   L1  every request ends exactly once (finished, cancelled, expired or
//       refused when added), and once arrivals stop the scheduler drains to
//       zero blocks in bounded steps: nothing is lost or stuck.
// Schedules are seeded 1..N: the report names the seed of each invariant's
// first breach, and RunSchedule(seed) replays it alone.
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "scheduler/invariants.h"
#include "scheduler/scheduler.h"
#include "tests/catch.h"

namespace blip2::scheduler {
namespace {

struct Tally {
  int64_t schedules = 0, steps = 0, requests = 0, preemptions = 0;
  std::map<std::string, int64_t> schedules_breaking;  // invariant -> schedules with at least one breach
  std::map<std::string, std::string> first;           // invariant -> seed and detail of its first breach
  std::map<int, std::pair<int64_t, int64_t>> by_classes;  // priority classes -> schedules, broken ones
};

// The random workload of one schedule.
struct Workload {
  SchedulerConfig config;
  int arrival_steps = 0;
  double arrival_rate = 0, cancel_rate = 0, deadline_share = 0, eos_share = 0;
  int max_prompt = 0, max_new = 0, priorities = 1;
};

Workload RandomWorkload(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Workload w;
  w.config.block_size = std::vector<int>{1, 2, 4, 8, 16}[pick(0, 4)];
  w.config.num_blocks = pick(4, 16);
  w.config.max_num_seqs = pick(2, 8);
  w.config.max_batched_tokens = pick(1, 4) * 16 * (pick(0, 3) == 0 ? 1 : 4);
  w.config.watermark = std::vector<double>{0, 0, 0.01, 0.1, 0.25}[pick(0, 4)];
  w.arrival_steps = pick(10, 60);
  w.arrival_rate = std::uniform_real_distribution<double>(0.2, 1.5)(rng);
  w.cancel_rate = std::vector<double>{0, 0.05, 0.2}[pick(0, 2)];
  w.deadline_share = std::vector<double>{0, 0.2, 0.5}[pick(0, 2)];
  w.eos_share = std::vector<double>{0, 0.3, 0.8}[pick(0, 2)];
  w.max_prompt = static_cast<int>(w.config.block_size) * pick(1, 3) + pick(0, 3);
  w.max_new = pick(1, 24);
  w.priorities = pick(1, 3);
  return w;
}

// Runs one schedule and adds what it breaks to `tally`.
void RunSchedule(uint64_t seed, Tally* tally) {
  std::mt19937_64 rng(seed);
  const Workload w = RandomWorkload(rng);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  Scheduler s(w.config);
  const Clock::time_point t0 = Clock::now();
  auto at = [&](int step) { return t0 + std::chrono::seconds(step); };

  struct Live {
    int64_t eos_after = -1;  // the fake model samples a stop id as this many-th token
  };
  std::map<RequestId, Live> live;
  std::map<RequestId, int> ended;  // id -> times it ended
  // Fake KV memory: (block, slot) -> (writer, position).
  std::map<std::pair<BlockId, int64_t>, std::pair<RequestId, int64_t>> kv;
  std::set<std::string> broken;
  auto breach = [&](const std::string& invariant, const std::string& detail) {
    if (broken.insert(invariant).second) {
      ++tally->schedules_breaking[invariant];
      if (tally->first.count(invariant) == 0) tally->first[invariant] = "seed " + std::to_string(seed) + ": " + detail;
    }
  };
  auto check = [&](const std::vector<Violation>& violations) {
    for (const Violation& v : violations) breach(v.invariant, v.detail);
  };
  auto end = [&](RequestId id) {
    ++ended[id];
    live.erase(id);
  };

  RequestId next_id = 1;
  const int max_steps = w.arrival_steps + 2000;  // drain bound: far beyond any sane schedule
  int step = 0;
  for (; step < max_steps; ++step) {
    if (step >= w.arrival_steps && live.empty()) break;
    if (step < w.arrival_steps) {
      std::poisson_distribution<int> arrivals(w.arrival_rate);
      for (int n = arrivals(rng); n > 0; --n) {
        SequenceRequest r;
        r.id = next_id++;
        r.prompt_tokens = pick(1, w.max_prompt);
        r.max_new_tokens = pick(1, w.max_new);
        r.priority = pick(0, w.priorities - 1);
        if (chance(w.deadline_share)) r.deadline = at(step + pick(1, 40));
        ++tally->requests;
        const AddResult added = s.Add(r);
        if (added == AddResult::kQueued) {
          live[r.id].eos_after = chance(w.eos_share) ? pick(1, static_cast<int>(r.max_new_tokens)) : -1;
        } else {
          ++ended[r.id];  // refused: its end
        }
      }
      if (chance(w.cancel_rate) && !live.empty()) {
        auto it = live.begin();
        std::advance(it, pick(0, static_cast<int>(live.size()) - 1));
        s.Cancel(it->first);
      }
      if (chance(0.02)) s.Cancel(next_id + 1000);  // unknown: harmless
    }
    const SchedulerOutput out = s.Schedule(at(step));
    check(StepViolations(s, out));
    check(StateViolations(s));
    tally->preemptions += static_cast<int64_t>(out.preempted.size());
    for (RequestId id : out.cancelled) end(id);
    for (RequestId id : out.expired) end(id);
    // The fake model, as a batched step runs: every sequence writes the KV of
    // its new tokens, then every sequence attends to all of its positions.
    auto slot = [&](const ScheduledSequence& q, int64_t pos) {
      const size_t block = static_cast<size_t>(pos / w.config.block_size);
      const BlockId b = block < q.block_table.size() ? q.block_table[block] : -1;
      return std::make_pair(b, pos % w.config.block_size);
    };
    for (const ScheduledSequence& q : out.sequences) {
      for (int64_t pos = q.cached_tokens; pos < q.cached_tokens + q.new_tokens; ++pos) kv[slot(q, pos)] = {q.id, pos};
    }
    std::vector<RequestId> finished;
    for (const ScheduledSequence& q : out.sequences) {
      for (int64_t pos = 0; pos < q.cached_tokens + q.new_tokens; ++pos) {
        auto it = kv.find(slot(q, pos));
        if (it == kv.end() || it->second != std::make_pair(q.id, pos)) {
          breach("R1 reads KV it did not write", "sequence " + std::to_string(q.id) + " position " +
                                                     std::to_string(pos) + " at step " + std::to_string(step));
          break;
        }
      }
      const auto it = live.find(q.id);
      const std::optional<int64_t> generated = s.generated_tokens(q.id);
      if (it != live.end() && generated && *generated + 1 == it->second.eos_after) finished.push_back(q.id);
    }
    for (RequestId id : s.Update(out, finished)) end(id);
    check(StateViolations(s));
    ++tally->steps;
  }
  if (!live.empty()) breach("L1 request never ended", std::to_string(live.size()) + " still live after " +
                                                        std::to_string(step) + " steps");
  for (const auto& [id, times] : ended) {
    if (times != 1) breach("L1 request ended twice", "sequence " + std::to_string(id));
  }
  if (s.num_used_blocks() != 0 || s.num_running() + s.num_waiting() != 0) {
    breach("L1 blocks or sequences left after draining", std::to_string(s.num_used_blocks()) + " blocks");
  }
  ++tally->schedules;
  ++tally->by_classes[w.priorities].first;
  if (!broken.empty()) ++tally->by_classes[w.priorities].second;
}

std::string Report(const Tally& t) {
  std::string text = std::to_string(t.schedules) + " schedules, " + std::to_string(t.steps) + " steps, " +
                     std::to_string(t.requests) + " requests, " + std::to_string(t.preemptions) + " preemptions";
  for (const auto& [classes, n] : t.by_classes) {
    text += "; " + std::to_string(classes) + " priority class(es): " + std::to_string(n.second) + " of " +
            std::to_string(n.first) + " broke an invariant";
  }
  if (t.schedules_breaking.empty()) return text + "; every invariant held";
  for (const auto& [invariant, n] : t.schedules_breaking) {
    text += "\n  " + invariant + ": " + std::to_string(n) + " schedules (first: " + t.first.at(invariant) + ")";
  }
  return text;
}

TEST_CASE("scheduler property: every invariant holds over 5,000 random schedules") {
  Tally tally;
  for (uint64_t seed = 1; seed <= 5000; ++seed) RunSchedule(seed, &tally);
  std::printf("PROPERTY %s\n", Report(tally).c_str());
  INFO(Report(tally));
  CHECK(tally.schedules_breaking.empty());
  CHECK(tally.preemptions > 1000);  // the workloads really do run out of blocks
}

}  // namespace
}  // namespace blip2::scheduler
