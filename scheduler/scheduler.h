// The LLM scheduler: which sequences run in the next step, with how many new
// tokens, in which KV blocks. Pure bookkeeping over integers (no LibTorch), so
// its behaviour is tested with tables of arrivals and expected batches.
//
// Each step (on the engine thread):
//   SchedulerOutput out = scheduler.Schedule(now);
//   ... the model runs out.sequences ...
//   scheduler.Update(out, finished_ids);
//
// Policy:
// - Running sequences each get one decode token first, in urgency order
//   (priority, then arrival: oldest first within a class). When a decode needs
//   a new block and none is free, the least urgent running sequence not yet in
//   this step is preempted: the last one of that same order, possibly the one
//   asking. Because the walk is in urgency order, every sequence already put in
//   the step is more urgent than the victim, so a victim is never in the step.
//   Its blocks are freed and it goes back to the waiting queue, to be
//   recomputed (prompt plus the tokens it had generated) when admitted again.
// - Then waiting sequences are admitted in priority order (lower value first),
//   FIFO within a class, while their whole prompt fits the free blocks (minus a
//   watermark while others run), max_num_seqs and max_batched_tokens. A
//   request that could never run is refused when it is added: its prompt plus
//   max_new_tokens exceeds the cache, or its longest recompute (prompt plus
//   max_new_tokens - 1) exceeds max_batched_tokens.
// - Sequences past their deadline are removed (their blocks freed) and
//   reported; cancelled ones likewise, at the next Schedule.
//
// Invariants (checked by scheduler/invariants.h after every Schedule and
// Update in tests/scheduler/scheduler_property_test.cc, over thousands of
// random schedules). Of every SchedulerOutput:
//   S1  No sequence in `sequences` is also in `preempted`, `cancelled` or
//       `expired`, and none is there twice: the engine computes exactly the
//       sequences that still own their blocks.
//   S2  No block appears in two block tables of one step, nor twice in one:
//       no two writers of one KV slot.
//   S3  Every block table covers its tokens:
//       block_table.size() >= BlocksFor(cached_tokens + new_tokens).
//   S4  A prefill starts from nothing (cached_tokens == 0) and computes the
//       sequence's whole history (prompt plus generated tokens); a decode
//       computes one token after cached_tokens == prompt + generated - 1.
//   S5  At most max_num_seqs sequences and max_batched_tokens tokens;
//       total_tokens is the sum of new_tokens.
// Of the scheduler's state:
//   B1  Every block is free (reference count 0, on the free list once) or held
//       by exactly the live sequences that list it (its reference count).
//   B2  Free blocks plus held blocks equal the capacity.
//   B3  Every running sequence's blocks cover its cached tokens.
//   Q1  Every live sequence is either waiting or running, never both, never
//       neither; waiting sequences hold no blocks.
//   Q2  At most max_num_seqs sequences run.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "scheduler/block_allocator.h"

namespace blip2::scheduler {

struct Violation;
class Scheduler;
std::vector<Violation> StateViolations(const Scheduler& scheduler);

using RequestId = int64_t;
using Clock = std::chrono::steady_clock;

struct SchedulerConfig {
  int64_t block_size = 16;           // tokens per KV block
  int64_t num_blocks = 1024;         // KV capacity
  int64_t max_num_seqs = 256;        // sequences per step
  int64_t max_batched_tokens = 4096; // tokens per step (prefills and decodes)
  double watermark = 0.01;           // fraction of blocks admission leaves free for decodes
};

struct SequenceRequest {
  RequestId id = 0;
  int64_t prompt_tokens = 0;    // <image> placeholders included
  int64_t max_new_tokens = 0;
  int priority = 0;             // lower runs first
  std::optional<Clock::time_point> deadline;
};

// One sequence's share of a step.
struct ScheduledSequence {
  RequestId id = 0;
  int64_t cached_tokens = 0;  // tokens already in its KV blocks: the first new token's position
  int64_t new_tokens = 0;     // a prefill (or recompute) or 1 for a decode
  bool is_prefill = false;    // true: the engine must (re)compute its prompt (+ generated tokens)
  std::vector<BlockId> block_table;
};

struct SchedulerOutput {
  std::vector<ScheduledSequence> sequences;
  std::vector<RequestId> preempted;  // lost their blocks this step; will be recomputed
  std::vector<RequestId> expired;    // past their deadline: removed
  std::vector<RequestId> cancelled;  // removed after Cancel
  int64_t total_tokens = 0;
};

enum class AddResult { kQueued, kNeverFits, kDuplicate };

// Whether a sequence can ever run under `config`. kExceedsCache: prompt +
// max_new_tokens needs more blocks than the cache has. kExceedsStep: its
// longest computation, the recompute after a preemption just before its last
// token (prompt + max_new_tokens - 1), exceeds max_batched_tokens, so it
// would wait forever. Add refuses both; callers use it to explain why.
enum class Fit { kFits, kExceedsCache, kExceedsStep };
Fit FitOf(const SchedulerConfig& config, int64_t prompt_tokens, int64_t max_new_tokens);

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  // kNeverFits when FitOf says it can never run.
  AddResult Add(const SequenceRequest& request);
  // Takes effect at the next Schedule; unknown ids are ignored. Returns whether the id was known.
  bool Cancel(RequestId id);

  // Removes a sequence at once, freeing its blocks (a failed model step).
  void Abort(RequestId id) { Remove(id); }

  SchedulerOutput Schedule(Clock::time_point now = Clock::now());
  // After the model ran `out`: every scheduled sequence produced one token;
  // those in `finished` (stop id or stop string) and those that reached
  // max_new_tokens leave and free their blocks.
  // Returns the ids that left because they reached max_new_tokens or finished.
  std::vector<RequestId> Update(const SchedulerOutput& out, const std::vector<RequestId>& finished);

  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_free_blocks() const { return blocks_.num_free(); }
  int64_t num_used_blocks() const { return blocks_.num_used(); }
  // Tokens generated so far by a live sequence (for recompute after preemption).
  std::optional<int64_t> generated_tokens(RequestId id) const;
  // Tokens of a live sequence's prompt.
  std::optional<int64_t> prompt_tokens(RequestId id) const;
  const SchedulerConfig& config() const { return config_; }

 private:
  friend std::vector<Violation> StateViolations(const Scheduler& scheduler);

  struct Sequence {
    SequenceRequest request;
    int64_t arrival = 0;            // order of Add
    int64_t generated = 0;          // tokens produced so far
    int64_t cached = 0;             // tokens whose KV is in `blocks`
    std::vector<BlockId> blocks;
    bool cancelled = false;
  };

  int64_t TokensToCompute(const Sequence& s) const { return s.request.prompt_tokens + s.generated - s.cached; }
  void Preempt(RequestId id, SchedulerOutput* out);
  void Remove(RequestId id);
  // Priority first (lower value), then arrival (earlier): the order of
  // decodes, of admission, and (reversed) of preemption.
  bool MoreUrgent(RequestId a, RequestId b) const;
  // Waiting ids in admission order.
  void SortWaiting();

  SchedulerConfig config_;
  BlockAllocator blocks_;
  int64_t watermark_blocks_ = 0;
  int64_t next_arrival_ = 0;
  std::map<RequestId, Sequence> sequences_;
  std::deque<RequestId> waiting_;
  std::vector<RequestId> running_;  // admission order (oldest first)
};

}  // namespace blip2::scheduler
