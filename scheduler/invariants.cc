#include "scheduler/invariants.h"

#include <algorithm>
#include <map>
#include <set>

namespace blip2::scheduler {
namespace {

std::string Id(RequestId id) { return "sequence " + std::to_string(id); }

}  // namespace

std::vector<Violation> StepViolations(const Scheduler& scheduler, const SchedulerOutput& out) {
  const SchedulerConfig& config = scheduler.config();
  std::vector<Violation> v;
  // S1
  std::set<RequestId> removed(out.preempted.begin(), out.preempted.end());
  removed.insert(out.cancelled.begin(), out.cancelled.end());
  removed.insert(out.expired.begin(), out.expired.end());
  std::set<RequestId> seen;
  for (const ScheduledSequence& q : out.sequences) {
    if (removed.count(q.request) > 0) {
      v.push_back({"S1 scheduled and removed", Id(q.id) + " is in the step and lost its blocks"});
    }
    if (!seen.insert(q.id).second) v.push_back({"S1 scheduled twice", Id(q.id)});
  }
  // S2: the blocks a sequence writes are its alone; blocks it only reads may be shared.
  std::map<BlockId, int> listed;  // block -> tables of this step listing it
  for (const ScheduledSequence& q : out.sequences) {
    for (BlockId b : std::set<BlockId>(q.block_table.begin(), q.block_table.end())) ++listed[b];
  }
  std::set<BlockId> written;
  for (const ScheduledSequence& q : out.sequences) {
    if (q.new_tokens <= 0) continue;
    const int64_t first = q.cached_tokens / config.block_size;
    const int64_t last = (q.cached_tokens + q.new_tokens - 1) / config.block_size;
    for (int64_t i = first; i <= last && i < static_cast<int64_t>(q.block_table.size()); ++i) {
      const BlockId b = q.block_table[static_cast<size_t>(i)];
      const bool twice_in_table = std::count(q.block_table.begin(), q.block_table.end(), b) > 1;
      if (listed[b] > 1 || twice_in_table || scheduler.block_ref_count(b) != 1) {
        v.push_back({"S2 written block shared", "block " + std::to_string(b) + " written by " + Id(q.id) + ", in " +
                                                    std::to_string(listed[b]) + " tables, " +
                                                    std::to_string(scheduler.block_ref_count(b)) + " holders"});
      }
      written.insert(b);
    }
  }
  for (const auto& [src, dst] : out.block_copies) {
    if (scheduler.block_ref_count(dst) != 1 || listed[dst] != 1 || src == dst) {
      v.push_back({"S2 copy into a shared block", "block " + std::to_string(src) + " -> " + std::to_string(dst)});
    }
  }
  int64_t tokens = 0;
  for (const ScheduledSequence& q : out.sequences) {
    tokens += q.new_tokens;
    // S3
    if (static_cast<int64_t>(q.block_table.size()) < BlocksFor(q.cached_tokens + q.new_tokens, config.block_size)) {
      v.push_back({"S3 table too short", Id(q.id) + ": " + std::to_string(q.block_table.size()) + " blocks for " +
                                             std::to_string(q.cached_tokens + q.new_tokens) + " tokens"});
    }
    // S4: only for sequences the scheduler still knows (a removed one is S1's).
    const std::optional<int64_t> generated = scheduler.generated_tokens(q.id);
    const std::optional<int64_t> prompt = scheduler.prompt_tokens(q.id);
    if (!generated || !prompt) continue;
    const int64_t history = *prompt + *generated;
    const bool cache_ok = q.cached_tokens == 0 || (config.prefix_caching && q.cached_tokens % config.block_size == 0);
    const bool ok = q.is_prefill ? cache_ok && q.cached_tokens < history && q.new_tokens == history - q.cached_tokens
                                 : q.new_tokens == 1 && q.cached_tokens == history - 1 && *generated > 0;
    if (!ok) {
      v.push_back({"S4 wrong tokens", Id(q.id) + (q.is_prefill ? " prefill" : " decode") + " of " +
                                          std::to_string(q.new_tokens) + " after " + std::to_string(q.cached_tokens) +
                                          ", history " + std::to_string(history)});
    }
  }
  // S5
  if (static_cast<int64_t>(out.sequences.size()) > config.max_num_seqs) v.push_back({"S5 too many sequences", ""});
  if (tokens != out.total_tokens) v.push_back({"S5 total_tokens wrong", ""});
  if (tokens > config.max_batched_tokens) v.push_back({"S5 too many tokens", std::to_string(tokens)});
  return v;
}

std::vector<Violation> StateViolations(const Scheduler& s) {
  std::vector<Violation> v;
  const BlockAllocator& blocks = s.blocks_;
  // B1: count the holders of every block from the sequences' own lists.
  std::vector<int32_t> holders(static_cast<size_t>(blocks.num_blocks()), 0);
  for (const auto& [id, q] : s.sequences_) {
    for (BlockId b : q.blocks) {
      if (b < 0 || b >= blocks.num_blocks()) {
        v.push_back({"B1 bad block id", Id(id) + " lists block " + std::to_string(b)});
      } else {
        ++holders[static_cast<size_t>(b)];
      }
    }
  }
  std::vector<int32_t> on_free_list(holders.size(), 0), on_lru(holders.size(), 0);
  for (BlockId b : blocks.free_blocks()) ++on_free_list[static_cast<size_t>(b)];
  for (BlockId b : blocks.cached_blocks()) ++on_lru[static_cast<size_t>(b)];
  int64_t held = 0;
  for (size_t b = 0; b < holders.size(); ++b) {
    const BlockId id = static_cast<BlockId>(b);
    const int32_t refs = blocks.ref_count(id);
    const bool keyed = blocks.key_of(id).has_value();
    const bool blank = refs == 0 && holders[b] == 0 && on_free_list[b] == 1 && on_lru[b] == 0 && !keyed;
    const bool cached = refs == 0 && holders[b] == 0 && on_free_list[b] == 0 && on_lru[b] == 1 && keyed;
    const bool owned = refs > 0 && on_free_list[b] == 0 && on_lru[b] == 0 && holders[b] == refs;
    if (!blank && !cached && !owned) {
      v.push_back({"B1 block neither free nor held by its listers",
                   "block " + std::to_string(b) + ": reference count " + std::to_string(refs) + ", listed by " +
                       std::to_string(holders[b]) + " sequences, on the free list " + std::to_string(on_free_list[b]) +
                       " times, on the cached list " + std::to_string(on_lru[b]) + " times"});
    }
    if (owned) ++held;
  }
  // B2
  if (blocks.num_free() + held != blocks.num_blocks()) {
    v.push_back({"B2 free + held != capacity", std::to_string(blocks.num_free()) + " + " + std::to_string(held) +
                                                   " != " + std::to_string(blocks.num_blocks())});
  }
  // Q1
  std::map<RequestId, int> waiting, running;  // times listed in each queue
  for (RequestId id : s.waiting_) ++waiting[id];
  for (RequestId id : s.running_) ++running[id];
  for (const auto& [id, r] : s.requests_) {
    const int w = waiting.count(id) > 0 ? waiting.at(id) : 0;
    const int n = running.count(id) > 0 ? running.at(id) : 0;
    if (w + n != 1) v.push_back({"Q1 not in exactly one queue", "request " + std::to_string(id)});
    if (r.sequences.empty()) v.push_back({"Q1 request without sequences", "request " + std::to_string(id)});
    for (SequenceId seq : r.sequences) {
      auto it = s.sequences_.find(seq);
      if (it == s.sequences_.end() || it->second.request != id) {
        v.push_back({"Q1 request lists a sequence that is not its own", Id(seq)});
        continue;
      }
      const auto& q = it->second;
      if (w == 1 && !q.blocks.empty()) v.push_back({"Q1 waiting sequence holds blocks", Id(seq)});
      // B3
      if (n == 1 && static_cast<int64_t>(q.blocks.size()) < BlocksFor(q.cached, s.config_.block_size)) {
        v.push_back({"B3 blocks do not cover cached tokens", Id(seq)});
      }
    }
  }
  for (const auto& [seq, q] : s.sequences_) {
    auto it = s.requests_.find(q.request);
    if (it == s.requests_.end() ||
        std::count(it->second.sequences.begin(), it->second.sequences.end(), seq) != 1) {
      v.push_back({"Q1 sequence without its request", Id(seq)});
    }
  }
  for (const auto* queue : {&waiting, &running}) {
    for (const auto& [id, times] : *queue) {
      if (s.requests_.count(id) == 0) v.push_back({"Q1 unknown request queued", "request " + std::to_string(id)});
    }
  }
  // Q2
  if (s.num_running_sequences() > s.config_.max_num_seqs || s.running_width() > s.config_.max_num_seqs) {
    v.push_back({"Q2 too many running", ""});
  }
  return v;
}

}  // namespace blip2::scheduler
