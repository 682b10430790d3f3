#include "benchmarks/static_batch.h"

#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdlib>
#include <limits>

#include "engine/model/blip2_model.h"

namespace blip2::bench {

StaticRun RunStaticBatches(const std::string& model_dir, const std::string& device, const std::string& dtype,
                        const std::vector<std::vector<float>>& images, int64_t batch, int64_t new_tokens) {
  auto model = engine::Blip2Model::Load({model_dir, device, dtype}, /*with_language_model=*/true);
  if (!model.ok()) std::abort();
  const engine::Blip2Model& m = **model;
  const engine::TextDecoder& decoder = m.decoder();
  auto ids = m.InputIds("", std::numeric_limits<int64_t>::max(), new_tokens);
  if (!ids.ok()) std::abort();
  c10::InferenceMode guard;
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  StaticRun run;
  const auto start = Clock::now();
  for (size_t first = 0; first < images.size(); first += static_cast<size_t>(batch)) {
    const size_t n = std::min(images.size() - first, static_cast<size_t>(batch));
    std::vector<const std::vector<float>*> pixels;
    for (size_t i = 0; i < n; ++i) pixels.push_back(&images[first + i]);
    const auto vision_start = Clock::now();
    const at::Tensor projected = m.image_path->Forward(m.PixelBatch(pixels)).projected;
    if (projected.is_cuda()) projected.cpu();  // wait for the device before reading the clock
    run.vision_seconds += seconds_since(vision_start);
    std::vector<engine::EncoderInput> prompts;
    for (size_t i = 0; i < n; ++i) prompts.push_back({*ids, projected[static_cast<int64_t>(i)]});
    std::vector<engine::DecoderInput> inputs = m.FirstSteps(prompts);
    const int64_t prompt = static_cast<int64_t>(inputs[0].token_ids.size());
    engine::KvCache cache = decoder.MakeSlotCache(static_cast<int64_t>(n), prompt + new_tokens);
    for (size_t i = 0; i < n; ++i) inputs[i].blocks = cache.SlotBlocks(static_cast<int64_t>(i));
    for (int64_t step = 0; step < new_tokens; ++step) {
      const at::Tensor next = decoder.Step(inputs, cache).argmax(-1).to(at::kCPU).contiguous();
      if (step + 1 == new_tokens) break;
      for (size_t i = 0; i < n; ++i) {
        inputs[i].cached = prompt + step;
        inputs[i].token_ids = {next.data_ptr<int64_t>()[i]};
        inputs[i].image_embeds = at::Tensor();
      }
    }
  }
  run.seconds = seconds_since(start);
  return run;
}

}  // namespace blip2::bench
