// The LLM scheduler: which sequences run in the next step, with how many new
// tokens, in which KV blocks. Pure bookkeeping over integers (no LibTorch), so
// its behaviour is tested with tables of arrivals and expected batches.
//
// A request owns one or more sequences: one for greedy decoding and a single
// sample, several for beam search (one per beam) and for several returned
// samples. A request starts with one sequence, whose id is the request's id;
// the engine forks more from it (Fork) and drops pruned ones (Free). Forked
// sequences share their parent's blocks (reference counted): a decode that
// would write into a block someone else also holds first gets a copy of it
// (copy-on-write, reported in SchedulerOutput::block_copies), so a fork costs
// at most one block per sequence and step.
//
// Each step (on the engine thread):
//   SchedulerOutput out = scheduler.Schedule(now);
//   ... the engine copies out.block_copies, the model runs out.sequences ...
//   scheduler.Update(out, finished_sequence_ids);
//   ... beams: Fork / Free to follow the surviving candidates ...
//
// Policy (requests are the unit of admission, preemption, cancellation,
// deadlines and priority; all live sequences of a running request step
// together, as beam search needs):
// - Running requests each get one decode token per live sequence first, in
//   urgency order (priority, then arrival: oldest first within a class). When
//   their blocks (new ones at a block boundary, copies of shared blocks) are
//   not free, the least urgent running request not yet in this step is
//   preempted: the last one of that same order, possibly the one asking.
//   Because the walk is in urgency order, every request already put in the
//   step is more urgent than the victim, so a victim is never in the step.
//   Its blocks are freed and it goes back to the waiting queue, each of its
//   sequences to be recomputed (prompt plus the tokens it had generated).
// - Then waiting requests are admitted in priority order (lower value first),
//   FIFO within a class, while all their sequences fit the free blocks (minus
//   a watermark while others run), max_num_seqs and max_batched_tokens. A
//   request that could never run is refused when it is added (FitOf).
// - Prefix caching (SchedulerConfig::prefix_caching): a request may name the
//   content keys of its prompt's full blocks (SequenceRequest::block_keys).
//   Admission shares the longest run of them already in the cache and
//   computes only the rest (at least one token, for the logits); after the
//   prefill the computed full prompt blocks are published under their keys.
// - Requests past their deadline are removed (their blocks freed) and
//   reported; cancelled ones likewise, at the next Schedule.
//
// Invariants (checked by scheduler/invariants.h after every Schedule and
// Update in tests/scheduler/scheduler_property_test.cc, over thousands of
// random schedules). Of every SchedulerOutput:
//   S1  No sequence in `sequences` belongs to a request in `preempted`,
//       `cancelled` or `expired`, and none is there twice: the engine computes
//       exactly the sequences that still own their blocks.
//   S2  No block a sequence writes in this step (those holding positions
//       cached_tokens .. cached_tokens + new_tokens - 1) is held by anyone
//       else: no two writers of one KV slot, and no write under a reader.
//       Every block_copies destination is such a written block or precedes it
//       (a fresh copy of the source's full content).
//   S3  Every block table covers its tokens:
//       block_table.size() >= BlocksFor(cached_tokens + new_tokens).
//   S4  A prefill computes the sequence's whole history (prompt plus generated
//       tokens) from cached_tokens, which is 0 or a whole number of blocks
//       found in the prefix cache, and less than the history; a decode
//       computes one token after cached_tokens == prompt + generated - 1.
//   S5  At most max_num_seqs sequences and max_batched_tokens tokens;
//       total_tokens is the sum of new_tokens.
// Of the scheduler's state:
//   B1  Every block is unheld (reference count 0, once on the blank free list
//       or once on the cached LRU list, which holds exactly the unheld blocks
//       with a key) or held by exactly the live sequences that list it.
//   B2  Unheld blocks plus held blocks equal the capacity.
//   B3  Every running sequence's blocks cover its cached tokens.
//   Q1  Every live request is either waiting or running, never both, never
//       neither; waiting requests' sequences hold no blocks; every request has
//       at least one sequence and every sequence one request.
//   Q2  At most max_num_seqs sequences run, and the running requests' widths
//       sum to at most max_num_seqs.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "scheduler/block_allocator.h"

namespace blip2::scheduler {

struct Violation;
class Scheduler;
std::vector<Violation> StateViolations(const Scheduler& scheduler);

using RequestId = int64_t;
using SequenceId = int64_t;  // a request's first sequence has the request's id
using Clock = std::chrono::steady_clock;

struct SchedulerConfig {
  int64_t block_size = 16;           // tokens per KV block
  int64_t num_blocks = 1024;         // KV capacity
  int64_t max_num_seqs = 256;        // sequences per step
  int64_t max_batched_tokens = 4096; // tokens per step (prefills and decodes)
  double watermark = 0.01;           // fraction of blocks admission leaves free for decodes
  bool prefix_caching = false;       // keep and reuse full prompt blocks by content key
};

struct SequenceRequest {
  RequestId id = 0;
  int64_t prompt_tokens = 0;    // <image> placeholders included
  int64_t max_new_tokens = 0;
  int priority = 0;             // lower runs first
  std::optional<Clock::time_point> deadline;
  // The most sequences this request will have at once (beams, samples).
  int64_t width = 1;
  // Content keys of the prompt's full blocks, in order (prefix caching); may
  // be empty or shorter.
  std::vector<BlockKey> block_keys;
};

// One sequence's share of a step.
struct ScheduledSequence {
  SequenceId id = 0;
  int64_t cached_tokens = 0;  // tokens already in its KV blocks: the first new token's position
  int64_t new_tokens = 0;     // a prefill (or recompute) or 1 for a decode
  bool is_prefill = false;    // true: the engine must (re)compute its prompt (+ generated tokens) from cached_tokens
  std::vector<BlockId> block_table;
  RequestId request = 0;
};

struct SchedulerOutput {
  std::vector<ScheduledSequence> sequences;
  // Copy-on-write: before the step, the engine copies block first -> second
  // (every layer's keys and values), in order.
  std::vector<std::pair<BlockId, BlockId>> block_copies;
  std::vector<RequestId> preempted;  // lost their blocks this step; will be recomputed
  std::vector<RequestId> expired;    // past their deadline: removed
  std::vector<RequestId> cancelled;  // removed after Cancel
  int64_t total_tokens = 0;
};

enum class AddResult { kQueued, kNeverFits, kDuplicate };

// Whether a request can ever run under `config`, with `width` sequences of
// prompt + max_new_tokens. kExceedsCache: they need more blocks than the cache
// has. kExceedsStep: their longest computation, the recompute after a
// preemption just before the last token ((prompt + max_new_tokens - 1) per
// sequence), exceeds max_batched_tokens, so it would wait forever.
// kExceedsSequences: width > max_num_seqs. Add refuses all three; callers use
// it to explain why.
enum class Fit { kFits, kExceedsCache, kExceedsStep, kExceedsSequences };
Fit FitOf(const SchedulerConfig& config, int64_t prompt_tokens, int64_t max_new_tokens, int64_t width = 1);

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  // kNeverFits when FitOf says it can never run.
  AddResult Add(const SequenceRequest& request);
  // Takes effect at the next Schedule; unknown ids are ignored. Returns whether the id was known.
  bool Cancel(RequestId id);
  // Removes a request and its sequences at once, freeing their blocks (a
  // failed model step, a finished beam search).
  void Abort(RequestId id) { RemoveRequest(id); }

  // A new running sequence `child` sharing every block of running sequence
  // `parent` (same tokens so far). False when parent is not running, or child
  // is already in use or would exceed the request's width.
  bool Fork(SequenceId parent, SequenceId child);
  // Drops one sequence (a pruned beam), freeing its share of the blocks; the
  // request goes with its last sequence. Unknown ids are ignored.
  void Free(SequenceId id);

  SchedulerOutput Schedule(Clock::time_point now = Clock::now());
  // After the model ran `out`: every scheduled sequence produced one token;
  // those in `finished` (stop id or stop string) and those that reached
  // max_new_tokens leave and free their blocks; a request leaves with its
  // last sequence. Returns the sequence ids that left.
  std::vector<SequenceId> Update(const SchedulerOutput& out, const std::vector<SequenceId>& finished);

  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_running_sequences() const;
  // Sequences the running requests may fork to: admission keeps it within
  // max_num_seqs, so a fork never needs a place that is not there.
  int64_t running_width() const;
  int64_t num_free_blocks() const { return blocks_.num_free(); }
  int64_t num_used_blocks() const { return blocks_.num_used(); }
  int64_t num_cached_blocks() const { return blocks_.num_cached(); }
  const PrefixCacheStats& prefix_cache_stats() const { return blocks_.stats(); }
  int32_t block_ref_count(BlockId block) const { return blocks_.ref_count(block); }
  bool has_request(RequestId id) const { return requests_.count(id) > 0; }
  // Tokens generated so far by a live sequence (for recompute after preemption).
  std::optional<int64_t> generated_tokens(SequenceId id) const;
  // Tokens of a live sequence's prompt.
  std::optional<int64_t> prompt_tokens(SequenceId id) const;
  const SchedulerConfig& config() const { return config_; }

 private:
  friend std::vector<Violation> StateViolations(const Scheduler& scheduler);

  struct Request {
    SequenceRequest request;
    int64_t arrival = 0;               // order of Add
    bool cancelled = false;
    std::vector<SequenceId> sequences;  // live ones, in fork order
  };
  struct Sequence {
    RequestId request = 0;
    int64_t generated = 0;  // tokens produced so far
    int64_t cached = 0;     // tokens whose KV is in `blocks`
    std::vector<BlockId> blocks;
  };

  int64_t TokensToCompute(const Sequence& s) const;
  // Blocks a decode step of every sequence of `r` takes from the free pool.
  int64_t DecodeBlocksNeeded(const Request& r) const;
  // Gives each sequence of `r` the blocks its next decode writes (new or
  // copied) and puts it in the step.
  void ScheduleDecodes(RequestId id, SchedulerOutput* out);
  // Prefix-cache hits for a recompute of `s`: blocks to share, in order.
  std::vector<BlockId> PrefixHits(const Request& r, const Sequence& s) const;
  bool TryAdmit(RequestId id, SchedulerOutput* out);
  void Preempt(RequestId id, SchedulerOutput* out);
  void RemoveRequest(RequestId id);
  void Publish(const ScheduledSequence& step, const Sequence& s);
  // Priority first (lower value), then arrival (earlier): the order of
  // decodes, of admission, and (reversed) of preemption.
  void SortByUrgency(std::vector<RequestId>* ids) const;

  SchedulerConfig config_;
  BlockAllocator blocks_;
  int64_t watermark_blocks_ = 0;
  int64_t next_arrival_ = 0;
  std::map<RequestId, Request> requests_;
  std::map<SequenceId, Sequence> sequences_;
  std::deque<RequestId> waiting_;
  std::vector<RequestId> running_;  // admission order (oldest first)
};

}  // namespace blip2::scheduler
