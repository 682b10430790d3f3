// Image-path parity with transformers, data-driven over any fixtures folder
// (BLIP2_FIXTURES_DIR, default tests/fixtures), on $BLIP2_TEST_DEVICE (cpu by
// default). Fed with the reference pixel values, so decoding is tested apart.
// Cases come from the key names of reference.safetensors:
//   <a>+<b>+....vision.last_hidden_state    a batch of those images' pixel_values.<a>, with
//     .vision.pooler_output, .qformer.last_hidden_state, .language_projection
//   pixel_values (a batch) with *vision_model_output.*, *.image_embeds,
//     vision_with_projection.*                (retrieval checkpoints)
// A half-precision case checks float16 / bfloat16 against our own float32.
#include <cmath>
#include <map>

#include "absl/strings/str_split.h"
#include "engine/model/image_encoder.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/parity/parity_checks.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using engine::HostTensor;

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::vector<float>> SplitBatch(const std::vector<float>& values, int64_t batch) {
  std::vector<std::vector<float>> out;
  const size_t per = values.size() / size_t(batch);
  for (int64_t i = 0; i < batch; ++i) out.emplace_back(values.begin() + i * per, values.begin() + (i + 1) * per);
  return out;
}

// Every batch of reference pixels a model's reference names, with the keys to compare.
struct Case {
  std::vector<std::vector<float>> pixels;
  std::map<std::string, std::string> compare;  // reference key -> our output name
};

std::vector<Case> CasesFor(const std::vector<FixtureModel>& all, const FixtureModel& m) {
  std::vector<Case> cases;
  for (const std::string& key : m.Keys()) {
    const std::string suffix = ".vision.last_hidden_state";
    if (!EndsWith(key, suffix)) continue;
    const std::string prefix = key.substr(0, key.size() - suffix.size());
    Case c;
    for (const std::string& image : std::vector<std::string>(absl::StrSplit(prefix, '+'))) {
      c.pixels.push_back(ReferencePixels(all, image, m.dir));
    }
    for (const auto& [name, output] : std::map<std::string, std::string>{{".vision.last_hidden_state", "vision"},
                                                                          {".vision.pooler_output", "pooler"},
                                                                          {".qformer.last_hidden_state", "qformer"},
                                                                          {".language_projection", "projected"}}) {
      if (m.HasTensor(prefix + name)) c.compare[prefix + name] = output;
    }
    cases.push_back(std::move(c));
  }
  if (m.HasTensor("pixel_values")) {
    Case c;
    c.pixels = SplitBatch(m.Values("pixel_values"), m.Shape("pixel_values")[0]);
    for (const std::string& key : m.Keys()) {
      if (EndsWith(key, "vision_model_output.last_hidden_state") || key == "vision_with_projection.last_hidden_state") {
        c.compare[key] = "vision";
      } else if (EndsWith(key, "vision_model_output.pooler_output")) {
        c.compare[key] = "pooler";
      } else if (EndsWith(key, ".image_embeds")) {
        // ITC embeddings, or (in the ITM output) the vision states under that name.
        c.compare[key] = "image_embeds_or_vision";
      }
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

const HostTensor& Output(const engine::ImageEncoding& e, const std::string& name, const std::vector<int64_t>& shape) {
  if (name == "vision") return e.vision_last_hidden_state;
  if (name == "pooler") return e.vision_pooler_output;
  if (name == "qformer") return e.qformer_output;
  if (name == "projected") return e.projected;
  return shape == e.image_embeds.shape ? e.image_embeds : e.vision_last_hidden_state;
}

TEST_CASE("parity: image path matches transformers (vision encoder, Q-Former, projections)") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  REQUIRE_FALSE(models.empty());
  for (const FixtureModel& m : models) {
    auto encoder = engine::ImageEncoder::Load({m.dir, TestDevice(), "float32"});
    INFO(m.name << ": " << encoder.status().ToString());
    REQUIRE(encoder.ok());
    int checked = 0;
    for (const Case& c : CasesFor(models, m)) {
      auto out = (*encoder)->Encode(c.pixels, /*include_intermediates=*/true);
      INFO(out.status().ToString());
      REQUIRE(out.ok());
      for (const auto& [key, output] : c.compare) {
        CheckTensor(m, key, Output(*out, output, m.Shape(key)));
        ++checked;
      }
    }
    INFO(m.name << ": no image-path reference tensors recognised");
    CHECK(checked > 0);
  }
}

// float16 / bfloat16 (vision and projections; the Q-Former stays float32)
// against our own float32 on the same device: relative L2 error of the
// embeddings below 2e-2.
TEST_CASE("parity: half precision stays within 2e-2 of float32") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  REQUIRE_FALSE(models.empty());
  for (const FixtureModel& m : models) {
    const std::vector<Case> cases = CasesFor(models, m);
    if (cases.empty()) continue;
    auto reference = engine::ImageEncoder::Load({m.dir, TestDevice(), "float32"});
    REQUIRE(reference.ok());
    auto ref = (*reference)->Encode(cases[0].pixels);
    REQUIRE(ref.ok());
    for (const char* dtype : {"float16", "bfloat16"}) {
      auto encoder = engine::ImageEncoder::Load({m.dir, TestDevice(), dtype});
      INFO(m.name << " " << dtype << ": " << encoder.status().ToString());
      REQUIRE(encoder.ok());
      auto out = (*encoder)->Encode(cases[0].pixels);
      INFO(out.status().ToString());
      REQUIRE(out.ok());
      double diff = 0, norm = 0;
      for (size_t i = 0; i < ref->embeddings.values.size(); ++i) {
        const double r = ref->embeddings.values[i];
        diff += (out->embeddings.values[i] - r) * (out->embeddings.values[i] - r);
        norm += r * r;
      }
      const double rel = std::sqrt(diff / norm);
      std::printf("PARITY %-22s %-48s relative L2 %.3g vs float32 (tolerance 0.02)\n", m.name.c_str(), dtype, rel);
      CHECK(rel < 2e-2);
    }
  }
}

}  // namespace
}  // namespace blip2::testing
