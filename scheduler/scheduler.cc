#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace blip2::scheduler {

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config),
      blocks_(config.num_blocks),
      watermark_blocks_(static_cast<int64_t>(std::floor(config.watermark * static_cast<double>(config.num_blocks)))) {}

Fit FitOf(const SchedulerConfig& config, int64_t prompt_tokens, int64_t max_new_tokens) {
  if (BlocksFor(prompt_tokens + max_new_tokens, config.block_size) > config.num_blocks) return Fit::kExceedsCache;
  if (prompt_tokens + std::max<int64_t>(max_new_tokens - 1, 0) > config.max_batched_tokens) return Fit::kExceedsStep;
  return Fit::kFits;
}

AddResult Scheduler::Add(const SequenceRequest& request) {
  if (sequences_.count(request.id) > 0) return AddResult::kDuplicate;
  if (FitOf(config_, request.prompt_tokens, request.max_new_tokens) != Fit::kFits) return AddResult::kNeverFits;
  Sequence s;
  s.request = request;
  s.arrival = next_arrival_++;
  sequences_.emplace(request.id, std::move(s));
  waiting_.push_back(request.id);
  return AddResult::kQueued;
}

bool Scheduler::Cancel(RequestId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return false;
  it->second.cancelled = true;
  return true;
}

std::optional<int64_t> Scheduler::generated_tokens(RequestId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return std::nullopt;
  return it->second.generated;
}

std::optional<int64_t> Scheduler::prompt_tokens(RequestId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return std::nullopt;
  return it->second.request.prompt_tokens;
}

void Scheduler::Remove(RequestId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  blocks_.Release(it->second.blocks);
  sequences_.erase(it);
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id), waiting_.end());
  running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
}

void Scheduler::Preempt(RequestId id, SchedulerOutput* out) {
  Sequence& s = sequences_.at(id);
  blocks_.Release(s.blocks);
  s.blocks.clear();
  s.cached = 0;  // recomputed from scratch when admitted again
  running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
  waiting_.push_front(id);
  out->preempted.push_back(id);
}

bool Scheduler::MoreUrgent(RequestId a, RequestId b) const {
  const Sequence& x = sequences_.at(a);
  const Sequence& y = sequences_.at(b);
  return std::make_pair(x.request.priority, x.arrival) < std::make_pair(y.request.priority, y.arrival);
}

void Scheduler::SortWaiting() {
  std::sort(waiting_.begin(), waiting_.end(), [&](RequestId a, RequestId b) { return MoreUrgent(a, b); });
}

SchedulerOutput Scheduler::Schedule(Clock::time_point now) {
  SchedulerOutput out;
  // Cancelled and expired sequences leave first, freeing their blocks.
  std::vector<RequestId> leaving;
  for (const auto& [id, s] : sequences_) {
    if (s.cancelled) {
      out.cancelled.push_back(id);
      leaving.push_back(id);
    } else if (s.request.deadline && now >= *s.request.deadline) {
      out.expired.push_back(id);
      leaving.push_back(id);
    }
  }
  for (RequestId id : leaving) Remove(id);

  // One decode token for every running sequence, in urgency order. When a
  // block is missing, the victim is the least urgent sequence not yet in this
  // step: the last of `order` still running. Every sequence before the
  // current one is more urgent, so a victim is never already in the step
  // (S1, S2); at worst the asking sequence preempts itself.
  std::vector<RequestId> order = running_;
  std::sort(order.begin(), order.end(), [&](RequestId a, RequestId b) { return MoreUrgent(a, b); });
  std::set<RequestId> preempted_now;
  size_t end = order.size();  // order[i, end): running and not yet in the step
  for (size_t i = 0; i < end; ++i) {
    if (static_cast<int64_t>(out.sequences.size()) >= config_.max_num_seqs ||
        out.total_tokens + 1 > config_.max_batched_tokens) {
      break;
    }
    const RequestId id = order[i];
    Sequence& s = sequences_.at(id);
    bool scheduled = true;
    while (BlocksFor(s.cached + 1, config_.block_size) > static_cast<int64_t>(s.blocks.size())) {
      std::vector<BlockId> block = blocks_.Allocate(1);
      if (!block.empty()) {
        s.blocks.push_back(block[0]);
        continue;
      }
      const RequestId victim = order[--end];
      Preempt(victim, &out);
      preempted_now.insert(victim);
      if (victim == id) {
        scheduled = false;
        break;
      }
    }
    if (!scheduled) break;  // it was the last one left
    out.sequences.push_back({id, s.cached, 1, false, s.blocks});
    out.total_tokens += 1;
  }

  // Admit waiting sequences while their whole (re)computation fits. The
  // watermark keeps blocks for the decodes of running sequences; with none
  // running it would only stop a sequence that needs the whole cache forever.
  SortWaiting();
  while (!waiting_.empty()) {
    const RequestId id = waiting_.front();
    if (preempted_now.count(id) > 0) break;  // not in the step that preempted it
    Sequence& s = sequences_.at(id);
    const int64_t tokens = TokensToCompute(s);
    const int64_t need = BlocksFor(tokens, config_.block_size);
    if (static_cast<int64_t>(out.sequences.size()) >= config_.max_num_seqs ||
        static_cast<int64_t>(running_.size()) >= config_.max_num_seqs ||
        out.total_tokens + tokens > config_.max_batched_tokens ||
        blocks_.num_free() - need < (running_.empty() ? 0 : watermark_blocks_)) {
      break;
    }
    s.blocks = blocks_.Allocate(need);
    s.cached = 0;
    waiting_.pop_front();
    running_.push_back(id);
    out.sequences.push_back({id, 0, tokens, true, s.blocks});
    out.total_tokens += tokens;
  }
  return out;
}

std::vector<RequestId> Scheduler::Update(const SchedulerOutput& out, const std::vector<RequestId>& finished) {
  std::vector<RequestId> left;
  const std::set<RequestId> done(finished.begin(), finished.end());
  for (const ScheduledSequence& step : out.sequences) {
    auto it = sequences_.find(step.id);
    if (it == sequences_.end()) continue;  // cancelled meanwhile
    Sequence& s = it->second;
    s.cached += step.new_tokens;
    s.generated += 1;  // every step of a sequence samples one token
    if (done.count(step.id) > 0 || s.generated >= s.request.max_new_tokens) {
      left.push_back(step.id);
      Remove(step.id);
    }
  }
  return left;
}

}  // namespace blip2::scheduler
