// Flan-T5 parity with transformers ([F], first part), data-driven over every
// fixture model whose language model is T5: the image path, the decoder
// logits for `decoder_input_ids_for_logits`, the 12 greedy step logits, and
// greedy generation by full recomputation.
#include <c10/core/InferenceMode.h>

#include "engine/blip2_model.h"
#include "engine/safetensors.h"
#include "engine/t5_model.h"
#include "engine/torch_util.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/parity/parity_checks.h"
#include "tests/parity/tensor_helpers.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

TEST_CASE("parity: T5 decoder logits, step logits and greedy generation match transformers") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int checked = 0;
  for (const FixtureModel& fm : models) {
    auto image_only = engine::Blip2Model::Load({fm.dir, TestDevice(), "float32"}, /*with_language_model=*/false);
    if (!image_only.ok() || (*image_only)->spec.config.language_model != engine::LanguageModelKind::kT5) continue;
    if (!fm.reference.contains("cases")) continue;
    const engine::Blip2Model& m = **image_only;
    engine::WeightLoader weights(*m.checkpoint, m.device);
    auto t5 = engine::T5Model::Load(weights, m.spec.config.t5, m.spec.config.image_token_index, at::kFloat);
    INFO(fm.name << ": " << t5.status().ToString());
    REQUIRE(t5.ok());
    c10::InferenceMode guard;
    for (const auto& [case_name, c] : fm.reference["cases"].items()) {
      INFO(fm.name << " case " << case_name);
      const at::Tensor embeds =
          m.image_path->Forward(m.PixelBatch({ReferencePixels(models, c["image"].get<std::string>())})).projected[0];
      const at::Tensor encoded = t5->Encode(embeds, c["input_ids"].get<std::vector<int64_t>>());
      const std::vector<int64_t> decoder_ids = c["decoder_input_ids_for_logits"].get<std::vector<int64_t>>();
      const at::Tensor logits = t5->Decode(encoded, decoder_ids);
      if (fm.HasTensor(case_name + ".decoder_logits")) {
        CheckTensor(fm, case_name + ".decoder_logits", ToHost(logits.unsqueeze(0)));
      }
      const std::string steps_key = case_name + ".greedy_min12.step_logits";
      if (fm.HasTensor(steps_key)) {
        const int64_t steps = fm.Shape(steps_key)[0];
        CheckTensor(fm, steps_key, ToHost(logits.narrow(0, 0, steps)));
        // The same steps through the incremental path (self-attention cache,
        // cross-attention keys computed once).
        engine::T5Model::DecodeState state = t5->StartDecoding(encoded);
        std::vector<at::Tensor> incremental;
        for (int64_t i = 0; i < steps; ++i) incremental.push_back(t5->DecodeStep(state, decoder_ids[i]));
        CheckTensor(fm, steps_key, ToHost(at::stack(incremental)));
        CHECK(at::allclose(at::stack(incremental), logits.narrow(0, 0, steps), 1e-5, 1e-5));
      }
      // Greedy by full recomputation, as transformers' generate (which stops at </s>).
      if (c.contains("generate_greedy_raw")) {
        const std::vector<int64_t> want = c["generate_greedy_raw"].get<std::vector<int64_t>>();
        std::vector<int64_t> got = {m.spec.config.t5.decoder_start_token_id};
        while (got.size() < want.size()) {
          const int64_t next = t5->Decode(encoded, got)[static_cast<int64_t>(got.size()) - 1].argmax().item<int64_t>();
          got.push_back(next);
          if (next == m.spec.config.t5.eos_token_id[0]) break;
        }
        got.resize(want.size(), m.spec.config.t5.pad_token_id);
        CHECK(got == want);
      }
      ++checked;
    }
  }
  std::printf("PARITY T5: %d cases compared\n", checked);
  CHECK(checked > 0);
}

}  // namespace
}  // namespace blip2::testing
