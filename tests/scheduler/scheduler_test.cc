// The LLM scheduler against tables of arrivals and the expected batch of every
// step, driven by a fake model runner (no LibTorch). A step reads:
//   P<id>:<n>  a prefill (or recompute) of n tokens     D<id>  one decode token
//   !<id>      preempted this step                       F<id>  finished (Update)
//   C<id>      cancelled                                 X<id>  past its deadline
// Finishes are listed after the step's batch; a sequence that finishes frees
// its place for the next step, not the current one.
#include "scheduler/scheduler.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "scheduler/invariants.h"
#include "tests/catch.h"

namespace blip2::scheduler {
namespace {

struct Arrival {
  int step;
  SequenceRequest request;
  int64_t eos_after = -1;  // the fake model emits a stop id as this many-th token (-1: never)
};

struct Event {
  int step;
  enum { kCancel } what;
  RequestId id;
};

// "invariant: detail" lines, for a failure message.
std::string Describe(const std::vector<Violation>& violations) {
  std::string text;
  for (const Violation& v : violations) text += v.invariant + ": " + v.detail + "\n";
  return text;
}

// Runs a scheduler for `steps` steps and describes each one, checking every
// invariant of scheduler.h after each Schedule and Update. `scheduler`, when
// given, receives the scheduler for checks after the run.
std::vector<std::string> Simulate(const SchedulerConfig& config, const std::vector<Arrival>& arrivals, int steps,
                                  const std::vector<Event>& events = {},
                                  std::unique_ptr<Scheduler>* scheduler = nullptr) {
  auto owned = std::make_unique<Scheduler>(config);
  Scheduler& s = *owned;
  std::map<RequestId, int64_t> eos_after;
  std::vector<std::string> trace;
  const Clock::time_point t0 = Clock::now();
  for (int step = 0; step < steps; ++step) {
    for (const Arrival& a : arrivals) {
      if (a.step == step) {
        REQUIRE(s.Add(a.request) == AddResult::kQueued);
        eos_after[a.request.id] = a.eos_after;
      }
    }
    for (const Event& e : events) {
      if (e.step == step) s.Cancel(e.id);
    }
    const SchedulerOutput out = s.Schedule(t0 + std::chrono::seconds(step));
    CHECK(Describe(StepViolations(s, out)) == "");
    CHECK(Describe(StateViolations(s)) == "");
    std::string line;
    auto add = [&](const std::string& item) { line += (line.empty() ? "" : " ") + item; };
    std::vector<RequestId> finished;
    for (const ScheduledSequence& q : out.sequences) {
      add(q.is_prefill ? "P" + std::to_string(q.id) + ":" + std::to_string(q.new_tokens) : "D" + std::to_string(q.id));
      // The token this step samples is the (generated + 1)-th.
      if (eos_after[q.id] > 0 && *s.generated_tokens(q.id) + 1 == eos_after[q.id]) finished.push_back(q.id);
    }
    for (RequestId id : out.preempted) add("!" + std::to_string(id));
    for (RequestId id : out.cancelled) add("C" + std::to_string(id));
    for (RequestId id : out.expired) add("X" + std::to_string(id));
    for (RequestId id : s.Update(out, finished)) add("F" + std::to_string(id));
    CHECK(Describe(StateViolations(s)) == "");
    trace.push_back(line);
  }
  if (scheduler != nullptr) *scheduler = std::move(owned);
  return trace;
}

SequenceRequest Req(RequestId id, int64_t prompt, int64_t max_new, int priority = 0) {
  SequenceRequest r;
  r.id = id;
  r.prompt_tokens = prompt;
  r.max_new_tokens = max_new;
  r.priority = priority;
  return r;
}

using Trace = std::vector<std::string>;

TEST_CASE("scheduler: prefills together, then decodes until max_new_tokens") {
  SchedulerConfig c;
  CHECK(Simulate(c, {{0, Req(1, 9, 3)}, {0, Req(2, 5, 2)}}, 4) == Trace{"P1:9 P2:5", "D1 D2 F2", "D1 F1", ""});
}

TEST_CASE("scheduler: requests join and leave every step (continuous batching)") {
  SchedulerConfig c;
  CHECK(Simulate(c, {{0, Req(1, 4, 4)}, {1, Req(2, 6, 2)}, {2, Req(3, 3, 1)}}, 5) ==
        Trace{"P1:4", "D1 P2:6", "D1 D2 P3:3 F2 F3", "D1 F1", ""});
}

TEST_CASE("scheduler: max_batched_tokens holds a prefill back, max_num_seqs holds a sequence back") {
  SchedulerConfig tokens;
  tokens.max_batched_tokens = 12;
  CHECK(Simulate(tokens, {{0, Req(1, 9, 3)}, {0, Req(2, 9, 3)}}, 4) == Trace{"P1:9", "D1 P2:9", "D1 D2 F1", "D2 F2"});
  SchedulerConfig seqs;
  seqs.max_num_seqs = 2;
  CHECK(Simulate(seqs, {{0, Req(1, 2, 2)}, {0, Req(2, 2, 3)}, {0, Req(3, 2, 1)}}, 4) ==
        Trace{"P1:2 P2:2", "D1 D2 F1", "D2 P3:2 F2 F3", ""});
}

TEST_CASE("scheduler: a stop id ends a sequence early and frees its blocks") {
  SchedulerConfig c;
  std::unique_ptr<Scheduler> s;
  CHECK(Simulate(c, {{0, Req(1, 4, 10), 2}}, 3, {}, &s) == Trace{"P1:4", "D1 F1", ""});
  CHECK(s->num_used_blocks() == 0);
}

TEST_CASE("scheduler: out of blocks, the newest sequence is preempted and later recomputed") {
  SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = 5;
  c.watermark = 0;
  std::unique_ptr<Scheduler> s;
  CHECK(Simulate(c, {{0, Req(1, 8, 6)}, {0, Req(2, 8, 6)}}, 11, {}, &s) ==
        Trace{"P1:8 P2:8", "D1 !2", "D1", "D1", "D1", "D1 F1", "P2:9", "D2", "D2", "D2", "D2 F2"});
  CHECK(s->num_used_blocks() == 0);
}

// The case that once corrupted KV: a less urgent sequence admitted before a
// more urgent one is the victim when the urgent one needs a block. It was
// preempted after it had been put in the step ("D1 D2 !1"), so both wrote
// block 1. Decodes now go in urgency order and the victim is never in the step.
TEST_CASE("scheduler: the less urgent, earlier sequence is preempted before it is put in the step") {
  SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = 2;
  c.watermark = 0;
  std::unique_ptr<Scheduler> s;
  CHECK(Simulate(c, {{0, Req(1, 1, 3, /*priority=*/1)}, {1, Req(2, 4, 3, /*priority=*/0)}}, 6, {}, &s) ==
        Trace{"P1:1", "D1 P2:4", "D2 !1", "D2 F2", "P1:3 F1", ""});
  CHECK(s->num_used_blocks() == 0);
}

// Mixed priorities with a re-admission: 1 (less urgent) runs first, is
// preempted for 2 and 3, comes back when they finish and is recomputed from
// its prompt and the tokens it had made.
TEST_CASE("scheduler: mixed priorities, preemption and re-admission") {
  SchedulerConfig c;
  c.block_size = 2;
  c.num_blocks = 4;
  c.watermark = 0;
  // Step 2: decodes in urgency order (2 before 1). Step 3: 1 needs a third
  // block; it is the least urgent, so it preempts itself and 3 gets its
  // blocks. Step 5: 3 preempts itself rather than take 2's blocks.
  CHECK(Simulate(c, {{0, Req(1, 2, 6, 1)}, {1, Req(2, 2, 6, 0)}, {2, Req(3, 1, 4, 0)}}, 13) ==
        Trace{"P1:2", "D1 P2:2", "D2 D1", "D2 P3:1 !1", "D2 D3", "D2 !3", "D2 F2", "P3:3", "D3 F3", "P1:5", "D1",
              "D1 F1", ""});
}

TEST_CASE("scheduler: lower priority values are admitted first, FIFO within a class") {
  SchedulerConfig c;
  c.max_num_seqs = 1;
  CHECK(Simulate(c, {{0, Req(1, 2, 1, /*priority=*/1)}, {0, Req(2, 2, 1, 0)}, {0, Req(3, 2, 1, 0)}}, 3) ==
        Trace{"P2:2 F2", "P3:2 F3", "P1:2 F1"});
}

TEST_CASE("scheduler: cancel takes effect at the next step, unknown ids are harmless") {
  SchedulerConfig c;
  std::unique_ptr<Scheduler> s;
  CHECK(Simulate(c, {{0, Req(1, 4, 10)}, {0, Req(2, 4, 3)}}, 4, {{2, Event::kCancel, 1}, {2, Event::kCancel, 99}}, &s) ==
        Trace{"P1:4 P2:4", "D1 D2", "D2 C1 F2", ""});
  CHECK(s->num_used_blocks() == 0);
  CHECK_FALSE(s->Cancel(12345));
}

TEST_CASE("scheduler: a deadline removes a waiting or running sequence") {
  SchedulerConfig c;
  c.max_num_seqs = 1;
  SequenceRequest r1 = Req(1, 4, 10);
  SequenceRequest r2 = Req(2, 4, 10);
  const Clock::time_point t0 = Clock::now();
  Scheduler s(c);
  r1.deadline = t0 + std::chrono::seconds(2);
  r2.deadline = t0 + std::chrono::seconds(1);
  REQUIRE(s.Add(r1) == AddResult::kQueued);
  REQUIRE(s.Add(r2) == AddResult::kQueued);
  auto out = s.Schedule(t0);
  s.Update(out, {});
  out = s.Schedule(t0 + std::chrono::seconds(1));  // r2 waited too long
  CHECK(out.expired == std::vector<RequestId>{2});
  s.Update(out, {});
  out = s.Schedule(t0 + std::chrono::seconds(2));  // r1 ran too long
  CHECK(out.expired == std::vector<RequestId>{1});
  CHECK(s.num_used_blocks() == 0);
  CHECK(s.num_running() + s.num_waiting() == 0);
}

TEST_CASE("scheduler: requests that can never fit are refused when added") {
  SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = 3;
  c.max_batched_tokens = 100;
  Scheduler s(c);
  CHECK(s.Add(Req(1, 10, 3)) == AddResult::kNeverFits);  // 13 tokens need 4 blocks of 3
  CHECK(s.Add(Req(2, 101, 1)) == AddResult::kNeverFits);
  // Its recompute after a preemption just before the last token: 99 + 2 > 100.
  CHECK(s.Add(Req(4, 9, 3)) == AddResult::kQueued);
  c.block_size = 100;
  Scheduler wide(c);
  CHECK(wide.Add(Req(5, 99, 3)) == AddResult::kNeverFits);
  CHECK(wide.Add(Req(6, 99, 2)) == AddResult::kQueued);
  CHECK(s.Add(Req(3, 4, 4)) == AddResult::kQueued);
  CHECK(s.Add(Req(3, 4, 4)) == AddResult::kDuplicate);
}

TEST_CASE("scheduler: the watermark never stops a sequence that needs the whole cache when nothing else runs") {
  SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = 4;
  c.watermark = 0.25;  // one block kept for decodes
  CHECK(Simulate(c, {{0, Req(1, 15, 1)}, {0, Req(2, 4, 2)}}, 4) == Trace{"P1:15 F1", "P2:4", "D2 F2", ""});
}

TEST_CASE("block allocator: shared blocks are freed when their last holder lets go") {
  BlockAllocator a(4);
  auto blocks = a.Allocate(3);
  REQUIRE(blocks.size() == 3);
  CHECK(a.Allocate(2).empty());
  a.Share(blocks[0]);
  a.Release(blocks);
  CHECK(a.num_free() == 3);
  a.Release({blocks[0]});
  CHECK(a.num_free() == 4);
}

TEST_CASE("scheduler: forked sequences share their parent's blocks and copy only the block they write") {
  SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = 9;  // three sequences of 6 + 4 tokens, unshared: what a recompute needs
  c.watermark = 0;
  Scheduler s(c);
  SequenceRequest r = Req(1, 6, 4);  // 6 prompt tokens: one full block and one half-filled
  r.width = 3;
  REQUIRE(s.Add(r) == AddResult::kQueued);
  SchedulerOutput out = s.Schedule();
  REQUIRE(out.sequences.size() == 1);
  const std::vector<BlockId> parent = out.sequences[0].block_table;
  s.Update(out, {});
  REQUIRE(s.Fork(1, 10));
  REQUIRE(s.Fork(1, 11));
  CHECK_FALSE(s.Fork(1, 12));  // beyond the request's width
  CHECK(s.num_used_blocks() == 2);
  out = s.Schedule();
  CHECK(StepViolations(s, out).empty());
  CHECK(StateViolations(s).empty());
  REQUIRE(out.sequences.size() == 3);
  // Two of the three writers of the half-filled block get copies; the full block stays shared.
  CHECK(out.block_copies.size() == 2);
  for (const ScheduledSequence& q : out.sequences) {
    CHECK(q.block_table[0] == parent[0]);
    CHECK(q.cached_tokens == 6);
  }
  CHECK(s.num_used_blocks() == 4);
  s.Update(out, {});
  s.Free(11);
  CHECK(StateViolations(s).empty());
  CHECK(s.num_running_sequences() == 2);
  s.Free(1);
  s.Free(10);  // the last sequence takes its request with it
  CHECK_FALSE(s.has_request(1));
  CHECK(s.num_used_blocks() == 0);
}

TEST_CASE("scheduler: a prompt whose full blocks are cached computes only the rest, and eviction forgets them") {
  SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = 4;
  c.watermark = 0;
  c.prefix_caching = true;
  Scheduler s(c);
  SequenceRequest a = Req(1, 10, 1);
  a.block_keys = {101, 102};  // two full blocks of ten prompt tokens
  REQUIRE(s.Add(a) == AddResult::kQueued);
  SchedulerOutput out = s.Schedule();
  REQUIRE(out.sequences.size() == 1);
  CHECK(out.sequences[0].new_tokens == 10);
  s.Update(out, {});  // done after one token: its blocks stay cached
  CHECK(s.num_used_blocks() == 0);
  CHECK(s.num_cached_blocks() == 2);
  SequenceRequest b = Req(2, 9, 2);
  b.block_keys = {101, 102};
  REQUIRE(s.Add(b) == AddResult::kQueued);
  out = s.Schedule();
  REQUIRE(out.sequences.size() == 1);
  CHECK(out.sequences[0].cached_tokens == 8);  // both blocks hit
  CHECK(out.sequences[0].new_tokens == 1);
  CHECK(s.prefix_cache_stats().hits == 2);
  CHECK(StepViolations(s, out).empty());
  s.Update(out, {});
  SequenceRequest other = Req(3, 8, 1);
  other.block_keys = {101, 999};  // the first block hits; the second differs
  REQUIRE(s.Add(other) == AddResult::kQueued);
  out = s.Schedule();  // 2's decode, then 3 (one hit; 4 tokens to compute)
  CHECK(StepViolations(s, out).empty());
  REQUIRE(out.sequences.size() == 2);
  CHECK(out.sequences[1].cached_tokens == 4);
  s.Update(out, {});
  // A prompt that needs every block evicts what is cached.
  SequenceRequest big = Req(4, 15, 1);
  REQUIRE(s.Add(big) == AddResult::kQueued);
  out = s.Schedule();
  REQUIRE(out.sequences.size() == 1);
  CHECK(s.prefix_cache_stats().evictions > 0);
  CHECK(StateViolations(s).empty());
}

}  // namespace
}  // namespace blip2::scheduler
