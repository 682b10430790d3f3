// Parity with transformers, data-driven over any fixtures folder
// (BLIP2_FIXTURES_DIR, default tests/fixtures). Models, images and cases are
// discovered from reference.json and the key names of reference.safetensors:
//   pixel_values.<image>                   one image through the processor
//   pixel_values (+ reference.json images) a batch of images through the processor
//   <a+b+...>.vision.last_hidden_state     the image path on that batch, with
//     .vision.pooler_output, .qformer.last_hidden_state, .language_projection
//   *vision_model_output.*, *.image_embeds, vision_with_projection.*  the same
//     computed from the batch `pixel_values` (retrieval checkpoints)
// Tolerances are the fixtures README's.
#include <cstdio>
#include <map>

#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "engine/image_encoder.h"
#include "engine/image_preprocessor.h"
#include "server/image_decoder.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using engine::HostTensor;

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<float> DecodeAndPreprocess(const std::string& image_path, const engine::ImageProcessorConfig& config) {
  auto bytes = common::ReadFile(image_path);
  REQUIRE(bytes.ok());
  auto rgb = server::DecodeImage(*bytes, {});
  INFO(image_path << ": " << rgb.status().ToString());
  REQUIRE(rgb.ok());
  auto values = engine::PreprocessImage(*rgb, config);
  REQUIRE(values.ok());
  return *values;
}

void Report(const std::string& model, const std::string& key, const Difference& d, double tolerance) {
  std::printf("PARITY %-22s %-48s max_abs %.3g mean_abs %.3g (tolerance %.3g)\n", model.c_str(), key.c_str(),
              d.max_abs, d.mean_abs, tolerance);
}

// Hidden states and scores: max |ours - ref| <= 1e-4 * (1 + max |ref|).
void CheckTensor(const FixtureModel& m, const std::string& key, const HostTensor& ours) {
  INFO(m.name << " " << key);
  REQUIRE(ours.shape == m.Shape(key));
  const Difference d = Compare(ours.values, m.Values(key));
  const double tolerance = 1e-4 * (1.0 + d.max_ref);
  Report(m.name, key, d, tolerance);
  CHECK(d.max_abs <= tolerance);
}

// Pixels: max abs <= 0.035 and mean abs <= 1e-4.
void CheckPixels(const FixtureModel& m, const std::string& key, const std::vector<float>& ours) {
  INFO(m.name << " " << key);
  const Difference d = Compare(ours, m.Values(key));
  Report(m.name, key, d, 0.035);
  CHECK(d.max_abs <= 0.035);
  CHECK(d.mean_abs <= 1e-4);
}

// Reference pixel values for one image: this model's, another model's, or (as
// a last resort) our own preprocessing, whose parity is tested separately.
std::vector<float> PixelsFor(const std::vector<FixtureModel>& all, const FixtureModel& m, const std::string& image,
                             const engine::ImageProcessorConfig& config) {
  const std::string key = "pixel_values." + image;
  if (m.HasTensor(key)) return m.Values(key);
  for (const FixtureModel& other : all) {
    if (other.HasTensor(key)) return other.Values(key);
  }
  const std::string path = FindImage(FixturesDir(), image);
  INFO("no reference pixels and no image file for " << image);
  REQUIRE_FALSE(path.empty());
  return DecodeAndPreprocess(path, config);
}

// Splits a [B, ...] batch into B per-image vectors.
std::vector<std::vector<float>> SplitBatch(const std::vector<float>& values, int64_t batch) {
  std::vector<std::vector<float>> out;
  const size_t per = values.size() / size_t(batch);
  for (int64_t i = 0; i < batch; ++i) out.emplace_back(values.begin() + i * per, values.begin() + (i + 1) * per);
  return out;
}

TEST_CASE("parity: pixel values match transformers' image processor") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  REQUIRE_FALSE(models.empty());
  int checked = 0;
  for (const FixtureModel& m : models) {
    auto spec = engine::LoadModelSpec(m.dir);
    REQUIRE(spec.ok());
    for (const std::string& key : m.Keys()) {
      if (key.rfind("pixel_values.", 0) == 0) {
        const std::string path = FindImage(FixturesDir(), key.substr(13));
        INFO(key << ": no image file");
        REQUIRE_FALSE(path.empty());
        CheckPixels(m, key, DecodeAndPreprocess(path, spec->image_processor));
        ++checked;
      } else if (key == "pixel_values" && m.reference.contains("images")) {
        std::vector<float> batch;
        for (const auto& image : m.reference["images"]) {
          const std::vector<float> one =
              DecodeAndPreprocess(FindImage(FixturesDir(), image.get<std::string>()), spec->image_processor);
          batch.insert(batch.end(), one.begin(), one.end());
        }
        CheckPixels(m, key, batch);
        ++checked;
      }
    }
  }
  CHECK(checked > 0);
}

TEST_CASE("parity: image path matches transformers (vision encoder, Q-Former, projections)") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  REQUIRE_FALSE(models.empty());
  for (const FixtureModel& m : models) {
    auto encoder = engine::ImageEncoder::Load({m.dir});
    INFO(m.name << ": " << encoder.status().ToString());
    REQUIRE(encoder.ok());
    const engine::ImageProcessorConfig& processor = (*encoder)->spec().image_processor;
    int checked = 0;

    // Batches named by their images: "<a>+<b>.vision.last_hidden_state" and friends.
    for (const std::string& key : m.Keys()) {
      const std::string suffix = ".vision.last_hidden_state";
      if (!EndsWith(key, suffix)) continue;
      const std::string prefix = key.substr(0, key.size() - suffix.size());
      std::vector<std::vector<float>> pixels;
      for (const std::string& image : std::vector<std::string>(absl::StrSplit(prefix, '+'))) {
        pixels.push_back(PixelsFor(models, m, image, processor));
      }
      auto out = (*encoder)->Encode(pixels, /*include_intermediates=*/true);
      REQUIRE(out.ok());
      const std::map<std::string, const HostTensor*> outputs = {
          {".vision.last_hidden_state", &out->vision_last_hidden_state},
          {".vision.pooler_output", &out->vision_pooler_output},
          {".qformer.last_hidden_state", &out->qformer_output},
          {".language_projection", &out->projected}};
      for (const auto& [name, tensor] : outputs) {
        if (m.HasTensor(prefix + name)) {
          CheckTensor(m, prefix + name, *tensor);
          ++checked;
        }
      }
    }

    // A batch given as `pixel_values`: outputs of the retrieval-model forwards.
    if (m.HasTensor("pixel_values")) {
      const int64_t batch = m.Shape("pixel_values")[0];
      auto out = (*encoder)->Encode(SplitBatch(m.Values("pixel_values"), batch), /*include_intermediates=*/true);
      REQUIRE(out.ok());
      for (const std::string& key : m.Keys()) {
        const HostTensor* ours = nullptr;
        if (EndsWith(key, "vision_model_output.last_hidden_state") || key == "vision_with_projection.last_hidden_state") {
          ours = &out->vision_last_hidden_state;
        } else if (EndsWith(key, "vision_model_output.pooler_output")) {
          ours = &out->vision_pooler_output;
        } else if (EndsWith(key, ".image_embeds")) {
          // ITC embeddings, or (in the ITM output) the vision states under that name.
          ours = m.Shape(key) == out->image_embeds.shape ? &out->image_embeds : &out->vision_last_hidden_state;
        }
        if (ours == nullptr) continue;
        CheckTensor(m, key, *ours);
        ++checked;
      }
    }
    INFO(m.name << ": no image-path reference tensors recognised");
    CHECK(checked > 0);
  }
}

}  // namespace
}  // namespace blip2::testing
