// Meaning, not only parity: every fixture model trained on a synthetic world
// (a folder with heldout.json, such as the demo model) captions and answers its
// held-out scenes through the serving engine, all requests at once, and at
// least 90% of captions and of answers must be right. The dtypes come from
// $BLIP2_SEMANTIC_DTYPES (comma separated; "DTYPE+int8" for the language
// model's weights in int8 computed in DTYPE; default float32, float16,
// bfloat16, float32+int8 and bfloat16+int8, as the GPU script runs them too),
// the device from $BLIP2_TEST_DEVICE.
#include <cstdlib>

#include "absl/strings/str_split.h"
#include "engine/generation/generation_params.h"
#include "engine/model/model_config.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/waiting_sink.h"
#include "tests/catch.h"
#include "tests/parity/heldout_set.h"
#include "tests/parity/parity_checks.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

std::vector<std::string> Dtypes() {
  const char* env = std::getenv("BLIP2_SEMANTIC_DTYPES");
  return absl::StrSplit(env != nullptr && *env != '\0' ? env : "float32,float16,bfloat16,float32+int8,bfloat16+int8", ',', absl::SkipEmpty());
}

struct Pending {
  std::string expected;
  std::string what;
  std::shared_ptr<engine::WaitingSink> sink;
};

TEST_CASE("semantic: trained fixture models caption and answer held-out scenes correctly") {
  const std::vector<HeldoutSet> sets = DiscoverHeldoutSets(FixturesDir());
  REQUIRE_FALSE(sets.empty());
  for (const HeldoutSet& set : sets) {
    auto spec = engine::LoadModelSpec(set.model_dir);
    REQUIRE(spec.ok());
    for (const std::string& dtype : Dtypes()) {
      const std::vector<std::string> parts = absl::StrSplit(dtype, '+');
      auto engine = engine::Engine::Start({set.model_dir, TestDevice(), parts[0], parts.size() > 1 ? parts[1] : ""});
      INFO(set.name << " " << dtype << ": " << engine.status().ToString());
      REQUIRE(engine.ok());
      std::vector<Pending> captions, answers;
      auto submit = [&](const std::vector<float>& pixels, const std::string& prompt, Pending pending,
                        std::vector<Pending>* into) {
        engine::EngineRequest request;
        request.pixels = pixels;
        request.prompt = prompt;
        request.overrides.max_new_tokens = 24;
        pending.sink = std::make_shared<engine::WaitingSink>();
        const auto submitted = (*engine)->Submit(std::move(request), pending.sink);
        INFO(pending.what << ": " << submitted.status().ToString());
        REQUIRE(submitted.ok());
        into->push_back(std::move(pending));
      };
      for (size_t i = 0; i < set.items.size(); ++i) {
        const HeldoutItem& item = set.items[i];
        const auto pixels = engine::PreprocessImage(item.image, spec->image_processor);
        REQUIRE(pixels.ok());
        const std::string label = "scene " + std::to_string(i);
        submit(*pixels, "", {item.caption, label + " caption", nullptr}, &captions);
        for (const auto& [question, answer] : item.questions) {
          submit(*pixels, engine::QuestionPrompt(question), {answer, label + " \"" + question + "\"", nullptr}, &answers);
        }
      }
      Score caption_score, answer_score;
      for (auto [pendings, score] : {std::pair{&captions, &caption_score}, std::pair{&answers, &answer_score}}) {
        for (const Pending& p : *pendings) {
          const auto result = p.sink->Wait();
          INFO(p.what << ": " << result.status().ToString());
          REQUIRE(result.ok());
          score->Add(p.expected, result->sequences.at(0).text, p.what);
        }
      }
      CheckMostlyRight(set.name + " " + dtype + " on " + TestDevice() + " (transformers float32: captions " +
                           set.metrics.value("caption_exact_match", nlohmann::json()).dump() + ", answers " +
                           set.metrics.value("vqa_accuracy", nlohmann::json()).dump() + ")",
                       caption_score, answer_score);
    }
  }
}

}  // namespace
}  // namespace blip2::testing
