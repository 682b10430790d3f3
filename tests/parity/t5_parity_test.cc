// Flan-T5 parity with transformers, data-driven over every fixture model whose
// language model is T5: the decoder logits for `decoder_input_ids_for_logits`
// in one prefill, greedy generation by full recomputation, and the batched
// encoder (every case encoded in one padded batch) equal to each case alone.
// The step logits through the KV cache and every generate run are in
// generation_parity_test.cc, for OPT and T5 alike.
#include <c10/core/InferenceMode.h>

#include "engine/model/blip2_model.h"
#include "engine/model/safetensors.h"
#include "engine/model/t5_model.h"
#include "engine/model/torch_util.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/parity/parity_checks.h"
#include "tests/parity/tensor_helpers.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

TEST_CASE("parity: T5 decoder logits in one prefill, greedy by recomputation and the batched encoder match transformers") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int checked = 0;
  for (const FixtureModel& fm : models) {
    auto spec = engine::LoadModelSpec(fm.dir);
    if (!spec.ok() || spec->config.language_model != engine::LanguageModelKind::kT5) continue;
    if (!fm.reference.contains("cases")) continue;
    auto model = engine::Blip2Model::Load({fm.dir, TestDevice(), "float32"}, /*with_language_model=*/true);
    INFO(fm.name << ": " << model.status().ToString());
    REQUIRE(model.ok());
    const engine::Blip2Model& m = **model;
    const engine::T5Model* t5 = &*m.t5;
    c10::InferenceMode guard;
    std::vector<engine::EncoderInput> all_cases;
    std::vector<at::Tensor> alone;
    for (const auto& [case_name, c] : fm.reference["cases"].items()) {
      INFO(fm.name << " case " << case_name);
      const at::Tensor embeds =
          m.image_path->Forward(m.PixelBatch({ReferencePixels(models, c["image"].get<std::string>(), fm.dir)})).projected[0];
      const at::Tensor encoded = t5->Encode(embeds, c["input_ids"].get<std::vector<int64_t>>());
      all_cases.push_back({c["input_ids"].get<std::vector<int64_t>>(), embeds});
      alone.push_back(encoded);
      const std::vector<int64_t> decoder_ids = c["decoder_input_ids_for_logits"].get<std::vector<int64_t>>();
      const at::Tensor logits = t5->Decode(encoded, decoder_ids);
      if (fm.HasTensor(case_name + ".decoder_logits")) {
        CheckTensor(fm, case_name + ".decoder_logits", ToHost(logits.unsqueeze(0)));
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
    // Prompts of different lengths padded into one encoder batch.
    const std::vector<at::Tensor> batched = t5->Encode(all_cases);
    REQUIRE(batched.size() == alone.size());
    for (size_t i = 0; i < alone.size(); ++i) {
      INFO(fm.name << " batched encoder, case " << i);
      REQUIRE(batched[i].sizes() == alone[i].sizes());
      CHECK(at::allclose(batched[i], alone[i], 1e-5, 1e-5));
    }
  }
  std::printf("PARITY T5: %d cases compared\n", checked);
  CHECK(checked > 0);
}

}  // namespace
}  // namespace blip2::testing
