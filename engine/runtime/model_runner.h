// The model runner: one scheduler step in, float32 logits out. It builds each
// scheduled sequence's decoder input (a prefill recomputes the sequence's
// history from its first uncached token; a decode feeds its last token),
// applies the step's copy-on-write block copies, and runs one packed decoder
// step over the paged KV cache it owns. Internal (ATen). Engine thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/ATen.h>

#include "engine/model/kv_cache.h"
#include "engine/model/text_decoder.h"
#include "scheduler/scheduler.h"

namespace blip2::engine {

// What the runner needs to know about one scheduled sequence.
struct SequenceSource {
  const DecoderInput* first_step = nullptr;      // the request's first step (ids, image rows, cross K/V)
  const std::vector<int64_t>* generated = nullptr;  // tokens the sequence produced so far
  int64_t image_token = -1;                      // OPT's <image> id (its rows take the image embeddings)
};

// The decoder inputs of `out`, in out.sequences order.
std::vector<DecoderInput> BuildInputs(const scheduler::SchedulerOutput& out,
                                      const std::function<SequenceSource(const scheduler::ScheduledSequence&)>& source);

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  // Copies out.block_copies, then one decoder step over `inputs`: logits
  // [inputs.size(), V], one row per sequence. Call under c10::InferenceMode.
  // May throw (a failed step fails the requests in it).
  virtual at::Tensor Run(const scheduler::SchedulerOutput& out, const std::vector<DecoderInput>& inputs) = 0;
};

// The runner of a real decoder over its paged KV cache.
class PagedModelRunner : public ModelRunner {
 public:
  PagedModelRunner(const TextDecoder& decoder, KvCache cache) : decoder_(decoder), cache_(std::move(cache)) {}
  at::Tensor Run(const scheduler::SchedulerOutput& out, const std::vector<DecoderInput>& inputs) override;

 private:
  const TextDecoder& decoder_;
  KvCache cache_;
};

}  // namespace blip2::engine
