// Helpers for parity tests that drive the language model directly: a whole
// sequence's logits in one step, and a case's first decoder step.
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "engine/model/blip2_model.h"

namespace blip2::testing {

// Logits of every position of `ids` in one prefill through the KV-cache path, [T, V].
inline at::Tensor FullLogits(const engine::OptDecoder& decoder, const at::Tensor& embeds,
                             const std::vector<int64_t>& ids) {
  engine::KvCache cache = decoder.MakeSlotCache(1, static_cast<int64_t>(ids.size()));
  engine::DecoderInput in;
  in.blocks = cache.SlotBlocks(0);
  in.token_ids = ids;
  in.image_embeds = embeds;
  in.all_logits = true;
  return decoder.Step({in}, cache);
}

// The first decoder step of a case (for T5, after the encoder).
inline engine::DecoderInput FirstStep(const engine::Blip2Model& m, const at::Tensor& embeds,
                                      const std::vector<int64_t>& ids) {
  return m.FirstSteps({engine::EncoderInput{ids, embeds}})[0];
}

}  // namespace blip2::testing
