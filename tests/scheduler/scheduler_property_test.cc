// Property test of the LLM scheduler: thousands of random schedules (arrivals,
// priorities, prompt and output lengths, block sizes, KV budgets, step limits,
// watermarks, cancels, deadlines, stop ids), with every invariant of
// scheduler.h checked after every Schedule and Update, plus two that only a
// model sees:
//   R1  a sequence reads back exactly the KV of its own history: a fake KV
//       memory stores, in each slot written, a hash of the token history up
//       to that position; block copies copy slots; every step checks every
//       position a sequence attends to. Forked sequences (beams, samples)
//       share their parent's history, prefix-cache hits share another
//       request's, so both are checked by content, not by writer;
//   L1  every request ends exactly once (finished, cancelled, expired or
//       refused when added), and once arrivals stop the scheduler drains to
//       zero blocks in bounded steps: nothing is lost or stuck.
// Schedules are seeded 1..N: the report names the seed of each invariant's
// first breach, and RunSchedule(seed) replays it alone.
#include <algorithm>
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
  int64_t schedules = 0, steps = 0, requests = 0, preemptions = 0, forks = 0, copies = 0, prefix_hits = 0;
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
  int max_width = 1;         // sequences per request (beams, samples)
  double reorder_rate = 0;   // chance per step that a wide request reshuffles its beams
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
  w.config.prefix_caching = pick(0, 1) == 1;
  w.max_width = std::min<int>(pick(1, 4), static_cast<int>(w.config.max_num_seqs));
  w.reorder_rate = std::vector<double>{0.3, 0.8, 1.0}[pick(0, 2)];
  return w;
}

// A hash of a token history up to and including position p (the content of
// that position's KV) given the hash up to p - 1.
uint64_t Chain(uint64_t before, int64_t token) { return (before ^ static_cast<uint64_t>(token)) * 1099511628211ull + 7; }

// Runs one schedule and adds what it breaks to `tally`.
void RunSchedule(uint64_t seed, Tally* tally) {
  std::mt19937_64 rng(seed);
  const Workload w = RandomWorkload(rng);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  Scheduler s(w.config);
  const Clock::time_point t0 = Clock::now();
  auto at = [&](int step) { return t0 + std::chrono::seconds(step); };
  const int64_t bs = w.config.block_size;

  struct Seq {
    std::vector<int64_t> tokens;   // prompt and generated tokens
    std::vector<uint64_t> hashes;  // hashes[p]: content of position p
    int64_t eos_after = -1;        // the fake model samples a stop id as this many-th token
    void Push(int64_t token) {
      hashes.push_back(Chain(hashes.empty() ? 0 : hashes.back(), token));
      tokens.push_back(token);
    }
  };
  std::map<SequenceId, Seq> seqs;
  std::map<RequestId, std::vector<SequenceId>> live;  // request -> its live sequences
  std::map<RequestId, int64_t> widths;
  std::map<RequestId, int> ended;                     // id -> times it ended
  std::map<std::pair<BlockId, int64_t>, uint64_t> kv;  // fake KV memory: (block, slot) -> content
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
    for (SequenceId q : live[id]) seqs.erase(q);
    live.erase(id);
  };
  auto eos_for = [&](int64_t max_new) { return chance(w.eos_share) ? pick(1, static_cast<int>(max_new)) : -1; };

  SequenceId next_id = 1;
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
        r.width = pick(1, w.max_width);
        if (chance(w.deadline_share)) r.deadline = at(step + pick(1, 40));
        // A prompt shares a prefix with others of the same "image" (0-2).
        Seq q;
        const int image = pick(0, 2);
        const int64_t shared = pick(0, static_cast<int>(r.prompt_tokens));
        for (int64_t i = 0; i < r.prompt_tokens; ++i) q.Push(i < shared ? image * 1000 + i : 100000 + pick(0, 3));
        for (int64_t b = 0; (b + 1) * bs <= r.prompt_tokens; ++b) r.block_keys.push_back(q.hashes[(b + 1) * bs - 1]);
        q.eos_after = eos_for(r.max_new_tokens);
        ++tally->requests;
        const AddResult added = s.Add(r);
        if (added == AddResult::kQueued) {
          seqs[r.id] = q;
          live[r.id] = {r.id};
          widths[r.id] = r.width;
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
    tally->copies += static_cast<int64_t>(out.block_copies.size());
    for (RequestId id : out.cancelled) end(id);
    for (RequestId id : out.expired) end(id);
    // The fake model, as a batched step runs: copies first, then every
    // sequence writes the KV of its new tokens, then every sequence attends
    // to all of its positions.
    auto slot = [&](const ScheduledSequence& q, int64_t pos) {
      const size_t block = static_cast<size_t>(pos / bs);
      const BlockId b = block < q.block_table.size() ? q.block_table[block] : -1;
      return std::make_pair(b, pos % bs);
    };
    for (const auto& [src, dst] : out.block_copies) {
      for (int64_t i = 0; i < bs; ++i) {
        auto it = kv.find({src, i});
        if (it != kv.end()) {
          kv[{dst, i}] = it->second;
        } else {
          kv.erase({dst, i});
        }
      }
    }
    for (const ScheduledSequence& q : out.sequences) {
      const Seq& sq = seqs.at(q.id);
      if (q.is_prefill && q.cached_tokens > 0) tally->prefix_hits += q.cached_tokens / bs;
      for (int64_t pos = q.cached_tokens; pos < q.cached_tokens + q.new_tokens; ++pos) {
        kv[slot(q, pos)] = pos < static_cast<int64_t>(sq.hashes.size()) ? sq.hashes[pos] : 0;
      }
    }
    std::vector<SequenceId> finished;
    for (const ScheduledSequence& q : out.sequences) {
      Seq& sq = seqs.at(q.id);
      for (int64_t pos = 0; pos < q.cached_tokens + q.new_tokens; ++pos) {
        auto it = kv.find(slot(q, pos));
        if (pos >= static_cast<int64_t>(sq.hashes.size()) || it == kv.end() || it->second != sq.hashes[pos]) {
          breach("R1 reads KV that is not its history", "sequence " + std::to_string(q.id) + " position " +
                                                            std::to_string(pos) + " at step " + std::to_string(step));
          break;
        }
      }
      const std::optional<int64_t> generated = s.generated_tokens(q.id);
      if (generated && *generated + 1 == sq.eos_after) finished.push_back(q.id);
      sq.Push(200000 + pick(0, 5));  // the sampled token: the next decode's input
    }
    for (SequenceId id : s.Update(out, finished)) {
      for (auto& [rid, members] : live) {
        auto m = std::find(members.begin(), members.end(), id);
        if (m == members.end()) continue;
        members.erase(m);
        seqs.erase(id);
        if (members.empty()) end(rid);
        break;
      }
    }
    check(StateViolations(s));
    // Wide requests that stepped reshuffle like beams: each new sequence
    // continues a random live one with its own last token (not yet in the
    // KV), unchosen ones are freed, chosen ones forked as often as needed.
    std::set<RequestId> stepped;
    for (const ScheduledSequence& q : out.sequences) stepped.insert(q.request);
    for (RequestId id : stepped) {
      auto it = live.find(id);
      if (it == live.end() || !s.has_request(id) || !chance(w.reorder_rate)) continue;
      std::vector<SequenceId>& members = it->second;
      const int64_t width = pick(1, static_cast<int>(widths.at(id)));
      std::vector<SequenceId> sources;
      for (int64_t b = 0; b < width; ++b) sources.push_back(members[pick(0, static_cast<int>(members.size()) - 1)]);
      std::vector<Seq> next;
      for (SequenceId src : sources) {
        Seq child = seqs.at(src);
        child.tokens.pop_back();
        child.hashes.pop_back();
        child.Push(200000 + pick(0, 5));
        child.eos_after = seqs.at(src).eos_after;
        next.push_back(child);
      }
      for (SequenceId m : members) {
        if (std::find(sources.begin(), sources.end(), m) == sources.end()) s.Free(m);
      }
      std::vector<SequenceId> now;
      for (size_t b = 0; b < sources.size(); ++b) {
        SequenceId target = sources[b];
        if (std::find(now.begin(), now.end(), target) != now.end()) {
          target = next_id++;
          if (!s.Fork(sources[b], target)) {
            breach("F1 fork refused", "request " + std::to_string(id));
            continue;
          }
          ++tally->forks;
        }
        now.push_back(target);
        seqs[target] = next[b];
      }
      for (SequenceId m : members) {
        if (std::find(now.begin(), now.end(), m) == now.end()) seqs.erase(m);
      }
      members = now;
      if (!s.has_request(id)) breach("F1 request vanished while reshuffling", "request " + std::to_string(id));
      check(StateViolations(s));
    }
    ++tally->steps;
  }
  if (!live.empty()) breach("L1 request never ended", std::to_string(live.size()) + " still live after " +
                                                        std::to_string(step) + " steps");
  for (const auto& [id, times] : ended) {
    if (times != 1) breach("L1 request ended twice", "request " + std::to_string(id));
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
                     std::to_string(t.requests) + " requests, " + std::to_string(t.preemptions) + " preemptions, " +
                     std::to_string(t.forks) + " forks, " + std::to_string(t.copies) + " block copies, " +
                     std::to_string(t.prefix_hits) + " prefix-cache block hits";
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
  CHECK(tally.forks > 1000);        // beams and samples really share blocks
  CHECK(tally.copies > 1000);       // and really diverge inside a shared block
  CHECK(tally.prefix_hits > 1000);  // and prompts really hit the prefix cache
}

}  // namespace
}  // namespace blip2::scheduler
