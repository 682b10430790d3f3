#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace blip2::scheduler {

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config),
      blocks_(config.num_blocks, config.prefix_caching),
      watermark_blocks_(static_cast<int64_t>(std::floor(config.watermark * static_cast<double>(config.num_blocks)))) {}

Fit FitOf(const SchedulerConfig& config, int64_t prompt_tokens, int64_t max_new_tokens, int64_t width) {
  if (width > config.max_num_seqs) return Fit::kExceedsSequences;
  if (width * BlocksFor(prompt_tokens + max_new_tokens, config.block_size) > config.num_blocks) {
    return Fit::kExceedsCache;
  }
  if (width * (prompt_tokens + std::max<int64_t>(max_new_tokens - 1, 0)) > config.max_batched_tokens) {
    return Fit::kExceedsStep;
  }
  return Fit::kFits;
}

AddResult Scheduler::Add(const SequenceRequest& request) {
  if (requests_.count(request.id) > 0 || sequences_.count(request.id) > 0) return AddResult::kDuplicate;
  if (request.width < 1 ||
      FitOf(config_, request.prompt_tokens, request.max_new_tokens, request.width) != Fit::kFits) {
    return AddResult::kNeverFits;
  }
  Request r;
  r.request = request;
  r.arrival = next_arrival_++;
  r.sequences = {request.id};
  requests_.emplace(request.id, std::move(r));
  sequences_[request.id].request = request.id;
  waiting_.push_back(request.id);
  return AddResult::kQueued;
}

bool Scheduler::Cancel(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return false;
  it->second.cancelled = true;
  return true;
}

bool Scheduler::Fork(SequenceId parent, SequenceId child) {
  auto p = sequences_.find(parent);
  if (p == sequences_.end() || sequences_.count(child) > 0 || requests_.count(child) > 0) return false;
  Request& r = requests_.at(p->second.request);
  if (std::find(running_.begin(), running_.end(), p->second.request) == running_.end() ||
      static_cast<int64_t>(r.sequences.size()) >= r.request.width) {
    return false;
  }
  Sequence copy = p->second;
  for (BlockId b : copy.blocks) blocks_.Share(b);
  sequences_.emplace(child, std::move(copy));
  r.sequences.push_back(child);
  return true;
}

void Scheduler::Free(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  const RequestId request = it->second.request;
  blocks_.Release(it->second.blocks);
  sequences_.erase(it);
  std::vector<SequenceId>& seqs = requests_.at(request).sequences;
  seqs.erase(std::remove(seqs.begin(), seqs.end(), id), seqs.end());
  if (seqs.empty()) RemoveRequest(request);
}

int64_t Scheduler::num_running_sequences() const {
  int64_t n = 0;
  for (RequestId id : running_) n += static_cast<int64_t>(requests_.at(id).sequences.size());
  return n;
}

int64_t Scheduler::running_width() const {
  int64_t n = 0;
  for (RequestId id : running_) n += requests_.at(id).request.width;
  return n;
}

std::optional<int64_t> Scheduler::generated_tokens(SequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return std::nullopt;
  return it->second.generated;
}

std::optional<int64_t> Scheduler::prompt_tokens(SequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return std::nullopt;
  return requests_.at(it->second.request).request.prompt_tokens;
}

int64_t Scheduler::TokensToCompute(const Sequence& s) const {
  return requests_.at(s.request).request.prompt_tokens + s.generated - s.cached;
}

void Scheduler::RemoveRequest(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  for (SequenceId seq : it->second.sequences) {
    blocks_.Release(sequences_.at(seq).blocks);
    sequences_.erase(seq);
  }
  requests_.erase(it);
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id), waiting_.end());
  running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
}

void Scheduler::Preempt(RequestId id, SchedulerOutput* out) {
  for (SequenceId seq : requests_.at(id).sequences) {
    Sequence& s = sequences_.at(seq);
    blocks_.Release(s.blocks);
    s.blocks.clear();
    s.cached = 0;  // recomputed from scratch (or the prefix cache) when admitted again
  }
  running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
  waiting_.push_front(id);
  out->preempted.push_back(id);
}

void Scheduler::SortByUrgency(std::vector<RequestId>* ids) const {
  // Keys looked up once, not at every comparison.
  std::vector<std::pair<std::pair<int, int64_t>, RequestId>> keyed;
  keyed.reserve(ids->size());
  for (RequestId id : *ids) {
    const Request& r = requests_.at(id);
    keyed.push_back({{r.request.priority, r.arrival}, id});
  }
  std::sort(keyed.begin(), keyed.end());
  for (size_t i = 0; i < keyed.size(); ++i) (*ids)[i] = keyed[i].second;
}

int64_t Scheduler::DecodeBlocksNeeded(const Request& r) const {
  if (r.sequences.size() == 1) {  // the common case, without the bookkeeping of shared blocks
    const Sequence& s = sequences_.at(r.sequences[0]);
    const int64_t grow = BlocksFor(s.cached + 1, config_.block_size) - static_cast<int64_t>(s.blocks.size());
    if (grow > 0) return grow;
    return blocks_.ref_count(s.blocks[static_cast<size_t>(s.cached / config_.block_size)]) > 1 ? 1 : 0;
  }
  int64_t need = 0;
  std::map<BlockId, int64_t> writers;  // shared block -> sequences of r writing into it
  for (SequenceId seq : r.sequences) {
    const Sequence& s = sequences_.at(seq);
    const int64_t grow = BlocksFor(s.cached + 1, config_.block_size) - static_cast<int64_t>(s.blocks.size());
    if (grow > 0) {
      need += grow;
    } else {
      ++writers[s.blocks[static_cast<size_t>(s.cached / config_.block_size)]];
    }
  }
  // k writers of a block with r holders: all k copy it when someone outside
  // them holds it too, else the last one writes in place.
  for (const auto& [block, k] : writers) {
    const int64_t holders = blocks_.ref_count(block);
    if (holders > 1) need += holders > k ? k : k - 1;
  }
  return need;
}

void Scheduler::ScheduleDecodes(RequestId id, SchedulerOutput* out) {
  for (SequenceId seq : requests_.at(id).sequences) {
    Sequence& s = sequences_.at(seq);
    while (BlocksFor(s.cached + 1, config_.block_size) > static_cast<int64_t>(s.blocks.size())) {
      s.blocks.push_back(blocks_.Allocate(1).at(0));
    }
    BlockId& target = s.blocks[static_cast<size_t>(s.cached / config_.block_size)];
    if (blocks_.ref_count(target) > 1) {  // copy-on-write: the others keep the original
      const BlockId copy = blocks_.Allocate(1).at(0);
      out->block_copies.emplace_back(target, copy);
      blocks_.Release({target});
      target = copy;
    }
    out->sequences.push_back({seq, s.cached, 1, false, s.blocks, id});
    out->total_tokens += 1;
  }
}

std::vector<BlockId> Scheduler::PrefixHits(const Request& r, const Sequence& s) const {
  std::vector<BlockId> hits;
  if (!blocks_.prefix_caching()) return hits;
  // Leave at least one token to compute: the step must produce its logits.
  const int64_t history = r.request.prompt_tokens + s.generated;
  const int64_t limit = std::min<int64_t>(static_cast<int64_t>(r.request.block_keys.size()),
                                          (history - 1) / config_.block_size);
  for (int64_t i = 0; i < limit; ++i) {
    const std::optional<BlockId> b = blocks_.Lookup(r.request.block_keys[static_cast<size_t>(i)]);
    if (!b) break;
    hits.push_back(*b);
  }
  return hits;
}

bool Scheduler::TryAdmit(RequestId id, SchedulerOutput* out) {
  Request& r = requests_.at(id);
  std::vector<std::vector<BlockId>> hits;
  int64_t tokens = 0, fresh = 0;
  std::set<BlockId> revived;  // cached blocks nobody holds: sharing takes them from the free pool
  for (SequenceId seq : r.sequences) {
    const Sequence& s = sequences_.at(seq);
    hits.push_back(PrefixHits(r, s));
    const int64_t history = r.request.prompt_tokens + s.generated;
    const int64_t hit = static_cast<int64_t>(hits.back().size());
    tokens += history - hit * config_.block_size;
    fresh += BlocksFor(history, config_.block_size) - hit;
    for (BlockId b : hits.back()) {
      if (blocks_.ref_count(b) == 0) revived.insert(b);
    }
  }
  const int64_t seqs = static_cast<int64_t>(r.sequences.size());
  const int64_t need = fresh + static_cast<int64_t>(revived.size());
  if (static_cast<int64_t>(out->sequences.size()) + seqs > config_.max_num_seqs ||
      running_width() + r.request.width > config_.max_num_seqs ||
      out->total_tokens + tokens > config_.max_batched_tokens ||
      blocks_.num_free() - need < (running_.empty() ? 0 : watermark_blocks_)) {
    return false;
  }
  for (size_t i = 0; i < r.sequences.size(); ++i) {
    Sequence& s = sequences_.at(r.sequences[i]);
    for (BlockId b : hits[i]) blocks_.Share(b);  // before Allocate, which may evict cached blocks
    const int64_t history = r.request.prompt_tokens + s.generated;
    const int64_t hit = static_cast<int64_t>(hits[i].size());
    std::vector<BlockId> rest = blocks_.Allocate(BlocksFor(history, config_.block_size) - hit);
    s.blocks = hits[i];
    s.blocks.insert(s.blocks.end(), rest.begin(), rest.end());
    s.cached = hit * config_.block_size;
    if (blocks_.prefix_caching()) {
      const int64_t eligible = std::min<int64_t>(static_cast<int64_t>(r.request.block_keys.size()),
                                                 (history - 1) / config_.block_size);
      blocks_.stats().hits += hit;
      blocks_.stats().misses += eligible - hit;
    }
    out->sequences.push_back({r.sequences[i], s.cached, history - s.cached, true, s.blocks, id});
    out->total_tokens += history - s.cached;
  }
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id), waiting_.end());
  running_.push_back(id);
  return true;
}

SchedulerOutput Scheduler::Schedule(Clock::time_point now) {
  SchedulerOutput out;
  // Cancelled and expired requests leave first, freeing their blocks.
  std::vector<RequestId> leaving;
  for (const auto& [id, r] : requests_) {
    if (r.cancelled) {
      out.cancelled.push_back(id);
      leaving.push_back(id);
    } else if (r.request.deadline && now >= *r.request.deadline) {
      out.expired.push_back(id);
      leaving.push_back(id);
    }
  }
  for (RequestId id : leaving) RemoveRequest(id);

  // One decode token for every sequence of every running request, in urgency
  // order. When blocks are missing, the victim is the least urgent request not
  // yet in this step: the last of `order` still running. Every request before
  // the current one is more urgent, so a victim is never already in the step
  // (S1, S2); at worst the asking request preempts itself.
  std::vector<RequestId> order = running_;
  SortByUrgency(&order);
  std::set<RequestId> preempted_now;
  size_t end = order.size();  // order[i, end): running and not yet in the step
  for (size_t i = 0; i < end; ++i) {
    const RequestId id = order[i];
    const int64_t seqs = static_cast<int64_t>(requests_.at(id).sequences.size());
    if (static_cast<int64_t>(out.sequences.size()) + seqs > config_.max_num_seqs ||
        out.total_tokens + seqs > config_.max_batched_tokens) {
      break;
    }
    bool scheduled = true;
    while (DecodeBlocksNeeded(requests_.at(id)) > blocks_.num_free()) {
      const RequestId victim = order[--end];
      Preempt(victim, &out);
      preempted_now.insert(victim);
      if (victim == id) {
        scheduled = false;
        break;
      }
    }
    if (!scheduled) break;  // it was the last one left
    ScheduleDecodes(id, &out);
  }

  // Admit waiting requests while their whole (re)computation fits. The
  // watermark keeps blocks for the decodes of running requests; with none
  // running it would only stop a request that needs the whole cache forever.
  std::vector<RequestId> waiting(waiting_.begin(), waiting_.end());
  SortByUrgency(&waiting);
  waiting_.assign(waiting.begin(), waiting.end());
  while (!waiting_.empty()) {
    const RequestId id = waiting_.front();
    if (preempted_now.count(id) > 0) break;  // not in the step that preempted it
    if (!TryAdmit(id, &out)) break;
  }
  return out;
}

void Scheduler::Publish(const ScheduledSequence& step, const Sequence& s) {
  const std::vector<BlockKey>& keys = requests_.at(s.request).request.block_keys;
  const int64_t full = std::min<int64_t>(static_cast<int64_t>(keys.size()), s.cached / config_.block_size);
  for (int64_t j = step.cached_tokens / config_.block_size; j < full; ++j) {
    blocks_.Publish(s.blocks[static_cast<size_t>(j)], keys[static_cast<size_t>(j)]);
  }
}

std::vector<SequenceId> Scheduler::Update(const SchedulerOutput& out, const std::vector<SequenceId>& finished) {
  std::vector<SequenceId> left;
  const std::set<SequenceId> done(finished.begin(), finished.end());
  for (const ScheduledSequence& step : out.sequences) {
    auto it = sequences_.find(step.id);
    if (it == sequences_.end()) continue;  // cancelled meanwhile
    Sequence& s = it->second;
    s.cached += step.new_tokens;
    s.generated += 1;  // every step of a sequence samples one token
    if (step.is_prefill && blocks_.prefix_caching()) Publish(step, s);
    if (done.count(step.id) > 0 || s.generated >= requests_.at(s.request).request.max_new_tokens) {
      left.push_back(step.id);
      Free(step.id);
    }
  }
  return left;
}

}  // namespace blip2::scheduler
