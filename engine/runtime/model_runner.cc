#include "engine/runtime/model_runner.h"

#include <algorithm>

namespace blip2::engine {

std::vector<DecoderInput> BuildInputs(
    const scheduler::SchedulerOutput& out,
    const std::function<SequenceSource(const scheduler::ScheduledSequence&)>& source) {
  std::vector<DecoderInput> inputs;
  inputs.reserve(out.sequences.size());
  for (const scheduler::ScheduledSequence& s : out.sequences) {
    const SequenceSource src = source(s);
    const DecoderInput& first = *src.first_step;
    DecoderInput in;
    in.blocks = s.block_table;
    in.cached = s.cached_tokens;
    in.cross = first.cross;
    if (!s.is_prefill) {
      in.token_ids = {src.generated->back()};
      inputs.push_back(std::move(in));
      continue;
    }
    // A prefill: the history (first step ids, then generated ones) from the
    // first position not in the cache (prefix-cache hits skip whole blocks).
    const int64_t prompt = static_cast<int64_t>(first.token_ids.size());
    const int64_t start = s.cached_tokens;
    for (int64_t p = start; p < prompt; ++p) in.token_ids.push_back(first.token_ids[static_cast<size_t>(p)]);
    for (int64_t p = std::max(start, prompt) - prompt; p < static_cast<int64_t>(src.generated->size()); ++p) {
      in.token_ids.push_back((*src.generated)[static_cast<size_t>(p)]);
    }
    if (first.image_embeds.defined()) {
      // The embeddings of the <image> rows that are computed in this step.
      const auto begin = first.token_ids.begin();
      const int64_t skipped = std::count(begin, begin + std::min(start, prompt), src.image_token);
      const int64_t computed = std::count(begin + std::min(start, prompt), first.token_ids.end(), src.image_token);
      if (computed > 0) in.image_embeds = first.image_embeds.narrow(0, skipped, computed);
    }
    inputs.push_back(std::move(in));
  }
  return inputs;
}

at::Tensor PagedModelRunner::Run(const scheduler::SchedulerOutput& out, const std::vector<DecoderInput>& inputs) {
  if (!out.block_copies.empty()) {
    BlockTable from, to;
    for (const auto& [src, dst] : out.block_copies) {
      from.push_back(src);
      to.push_back(dst);
    }
    cache_.CopyBlocks(to, from);
  }
  return decoder_.Step(inputs, cache_);
}

}  // namespace blip2::engine
