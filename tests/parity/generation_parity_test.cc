// Language-model parity with transformers, data-driven over any fixtures folder
// (BLIP2_FIXTURES_DIR): every OPT or T5 model folder whose reference.json has "cases".
//   <case>.logits                        OPT: full-forward logits over the case's input_ids
//   <case>.greedy_min12.step_logits      raw logits of each greedy step, through the KV cache
//   cases[*].generate[*]                 every generate run: kwargs -> exactly the same new ids
//   batched_left_padded + batched.logits three unrelated sequences packed in one step
// Pixels come from the reference pixel_values.<image> of any fixture model.
#include <c10/core/InferenceMode.h>

#include <filesystem>

#include "engine/model/blip2_model.h"
#include "engine/generation/generator.h"
#include "engine/generation/logits_processors.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/parity/parity_checks.h"
#include "tests/parity/model_helpers.h"
#include "tests/parity/tensor_helpers.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using nlohmann::json;

TEST_CASE("parity: OPT and T5 logits, KV-cache steps and every generate run match transformers") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int models_checked = 0;
  for (const CaseFolder& folder : DiscoverCaseFolders(FixturesDir())) {
    const std::string& dir = folder.dir;
    const json& reference = folder.reference;
    const FixtureModel* tensors = nullptr;
    for (const FixtureModel& m : models) {
      if (m.dir == dir) tensors = &m;
    }
    auto model = engine::Blip2Model::Load({dir, TestDevice(), "float32"}, /*with_language_model=*/true);
    INFO(dir << ": " << model.status().ToString());
    REQUIRE(model.ok());
    const engine::Blip2Model& m = **model;
    c10::InferenceMode guard;
    int runs = 0;
    for (const auto& [case_name, c] : reference["cases"].items()) {
      INFO(dir << " case " << case_name);
      const std::vector<int64_t> input_ids = c["input_ids"].get<std::vector<int64_t>>();
      const at::Tensor embeds =
          m.image_path->Forward(m.PixelBatch({ReferencePixels(models, c["image"].get<std::string>(), m.spec.model_dir)})).projected[0];
      const engine::DecoderInput first = FirstStep(m, embeds, input_ids);
      if (m.opt && tensors != nullptr && tensors->HasTensor(case_name + ".logits")) {
        CheckTensor(*tensors, case_name + ".logits", ToHost(FullLogits(*m.opt, embeds, input_ids).unsqueeze(0)));
      }
      const std::string steps_key = case_name + ".greedy_min12.step_logits";
      if (tensors != nullptr && tensors->HasTensor(steps_key)) {
        const int64_t steps = tensors->Shape(steps_key)[0];
        engine::GenerationOverrides o;
        o.max_new_tokens = steps;
        o.min_new_tokens = steps;
        auto params = engine::ResolveGenerationParams(m.spec.generation, o, {});
        REQUIRE(params.ok());
        std::vector<at::Tensor> logits;
        engine::GenerationHooks hooks;
        hooks.on_logits = [&](const at::Tensor& l) { logits.push_back(l.clone()); };
        engine::Generate(m.decoder(), first, *params, hooks);
        CheckTensor(*tensors, steps_key, ToHost(at::cat(logits, 0)));
      }
      const json runs_json = c.contains("generate") ? c["generate"] : json::array();
      for (const auto& run : runs_json) {
        INFO("kwargs " << run["kwargs"].dump());
        auto params = engine::ResolveGenerationParams(m.spec.generation, OverridesFromKwargs(run["kwargs"]), {});
        REQUIRE(params.ok());
        const auto hyps = engine::Generate(m.decoder(), first, *params);
        const auto expected = run["sequences"].get<std::vector<std::vector<int64_t>>>();
        REQUIRE(hyps.size() == expected.size());
        for (size_t i = 0; i < hyps.size(); ++i) {
          const std::vector<int64_t> want(expected[i].begin() + NewIdsStart(m.spec, c), expected[i].end());
          std::vector<int64_t> got = hyps[i].tokens;
          INFO("sequence " << i);
          REQUIRE(got.size() <= want.size());
          got.resize(want.size(), ReturnedPadId(m.spec));  // transformers pads shorter sequences
          CHECK(got == want);
        }
        ++runs;
      }
    }
    std::printf("PARITY %-22s %d generate runs compared\n", folder.name.c_str(), runs);
    ++models_checked;
  }
  CHECK(models_checked > 0);
}

TEST_CASE("parity: a left-padded batch equals three sequences packed into one KV-cache step") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int checked = 0;
  for (const FixtureModel& fm : models) {
    if (!fm.reference.contains("batched_left_padded")) continue;
    auto model = engine::Blip2Model::Load({fm.dir, TestDevice(), "float32"}, /*with_language_model=*/true);
    REQUIRE(model.ok());
    REQUIRE((*model)->opt);  // left padding is an OPT (decoder-only) batch
    const engine::Blip2Model& m = **model;
    c10::InferenceMode guard;
    const json& b = fm.reference["batched_left_padded"];
    const auto ids = b["input_ids"].get<std::vector<std::vector<int64_t>>>();
    const auto mask = b["attention_mask"].get<std::vector<std::vector<int64_t>>>();
    const auto images = b["images"].get<std::vector<std::string>>();
    const auto expected = b["generate_greedy_min12_raw"].get<std::vector<std::vector<int64_t>>>();
    const int64_t rows = static_cast<int64_t>(ids.size());
    const int64_t width = static_cast<int64_t>(ids[0].size());
    const int64_t steps = static_cast<int64_t>(expected[0].size()) - width;
    engine::KvCache cache = m.opt->MakeSlotCache(rows, width + steps);
    std::vector<engine::DecoderInput> inputs(rows);
    std::vector<std::vector<int64_t>> history(rows);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t t = 0; t < width; ++t) {
        if (mask[r][t] != 0) history[r].push_back(ids[r][t]);  // no padding: packing needs none
      }
      inputs[r].blocks = cache.SlotBlocks(r);
      inputs[r].token_ids = history[r];
      inputs[r].all_logits = true;
      inputs[r].image_embeds = m.image_path->Forward(m.PixelBatch({ReferencePixels(models, images[r], fm.dir)})).projected[0];
    }
    const at::Tensor logits = m.opt->Step(inputs, cache);  // rows of every sequence, one after another
    if (fm.HasTensor("batched.logits")) {
      // Compare the unpadded positions of transformers' padded batch.
      const at::Tensor ref = at::from_blob(fm.Values("batched.logits").data(), {rows, width, logits.size(1)},
                                           at::kFloat).clone();
      std::vector<at::Tensor> ref_rows;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t t = 0; t < width; ++t) {
          if (mask[r][t] != 0) ref_rows.push_back(ref[r][t]);
        }
      }
      const Difference d = Compare(ToHost(logits).values, ToHost(at::stack(ref_rows)).values);
      std::printf("PARITY %-22s %-48s max_abs %.3g (tolerance %.3g)\n", fm.name.c_str(), "batched.logits (unpadded)",
                  d.max_abs, 1e-4 * (1 + d.max_ref));
      CHECK(d.max_abs <= 1e-4 * (1 + d.max_ref));
    }
    // Greedy with min_new_tokens = steps, all three decoded together.
    engine::GenerationOverrides o;
    o.max_new_tokens = steps;
    o.min_new_tokens = steps;
    const engine::GenerationParams params = *engine::ResolveGenerationParams(m.spec.generation, o, {});
    std::vector<int64_t> last_rows;
    int64_t offset = 0;
    for (int64_t r = 0; r < rows; ++r) {
      offset += static_cast<int64_t>(history[r].size());
      last_rows.push_back(offset - 1);
    }
    at::Tensor step_logits = logits.index_select(0, at::tensor(last_rows, at::kLong).to(logits.device()));
    for (int64_t s = 0; s < steps; ++s) {
      std::vector<engine::DecoderInput> next(rows);
      for (int64_t r = 0; r < rows; ++r) {
        at::Tensor scores = step_logits[r].clone();
        const int64_t prompt_len = static_cast<int64_t>(history[r].size()) - s;
        engine::ProcessScores(scores, history[r], s, params, 1);
        history[r].push_back(scores.argmax().item<int64_t>());
        next[r].blocks = cache.SlotBlocks(r);
        next[r].cached = prompt_len + s;
        next[r].token_ids = {history[r].back()};
      }
      if (s + 1 < steps) step_logits = m.opt->Step(next, cache);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<int64_t> want(expected[r].begin() + width, expected[r].end());
      const std::vector<int64_t> got(history[r].end() - steps, history[r].end());
      INFO(fm.name << " row " << r);
      CHECK(got == want);
    }
    ++checked;
  }
  CHECK(checked > 0);
}

}  // namespace
}  // namespace blip2::testing
