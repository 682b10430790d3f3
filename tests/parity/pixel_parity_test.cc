// Pixel parity with transformers' image processor, data-driven over any
// fixtures folder (BLIP2_FIXTURES_DIR, default tests/fixtures):
//   pixel_values.<image>                    one image file from images/
//   pixel_values + reference.json "images"  a batch of image files
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/parity/image_files.h"
#include "tests/parity/parity_checks.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

TEST_CASE("parity: pixel values match transformers' image processor") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  REQUIRE_FALSE(models.empty());
  int checked = 0;
  for (const FixtureModel& m : models) {
    auto spec = engine::LoadModelSpec(m.dir);
    REQUIRE(spec.ok());
    for (const std::string& key : m.Keys()) {
      if (key.rfind("pixel_values.", 0) == 0) {
        CheckPixels(m, key, DecodeAndPreprocess(FindImage(FixturesDir(), key.substr(13)), spec->image_processor));
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

}  // namespace
}  // namespace blip2::testing
