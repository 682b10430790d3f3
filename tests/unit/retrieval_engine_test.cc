// Retrieval through the engine with the tiny retrieval fixture: requests with
// and without images share the vision batcher and the image cache, texts are
// cut and flagged at max_text_tokens, and bad requests are refused naming the
// problem; a generation and a retrieval checkpoint share one engine. (Numbers
// against transformers: retrieval_parity_tests.)
#include <cstring>

#include "engine/runtime/engine.h"
#include "engine/runtime/retrieval_sink.h"
#include "engine/runtime/waiting_sink.h"
#include "engine/model/safetensors.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

std::string Model() { return testing::FixturesDir() + "/blip2-tiny-itm"; }

std::vector<float> Pixels(int index) {  // the fixture's pixel_values[index]
  auto file = SafetensorsFile::Open(Model() + "/reference.safetensors");
  REQUIRE(file.ok());
  const TensorView& v = (*file)->tensors().at("pixel_values");
  const size_t per_image = v.numel() / v.shape[0];
  std::vector<float> pixels(per_image);
  std::memcpy(pixels.data(), reinterpret_cast<const float*>(v.data) + index * per_image, per_image * sizeof(float));
  return pixels;
}

absl::StatusOr<RetrievalResult> Run(Engine& engine, RetrievalRequest request) {
  auto sink = std::make_shared<RetrievalWaiter>();
  auto id = engine.SubmitRetrieval(std::move(request), sink);
  if (!id.ok()) return id.status();
  return sink->Wait();
}

TEST_CASE("retrieval engine: match scores every text, the image is encoded once, texts-only embeds") {
  auto engine = Engine::Start({Model()});
  REQUIRE(engine.ok());
  CHECK((*engine)->serves_retrieval());
  CHECK_FALSE((*engine)->serves_generation());
  RetrievalRequest match{Pixels(0), std::nullopt, {"a photo of a cat", "a cup of coffee", "an astronaut"}, true, true};
  auto first = Run(**engine, match);
  REQUIRE(first.ok());
  REQUIRE(first->texts.size() == 3);
  CHECK(first->image_embeddings.rows == 8);
  CHECK(first->image_embeddings.cols == 16);
  CHECK(first->image_features.rows == 8);
  for (const TextRetrieval& t : first->texts) {
    CHECK(t.match_probability > 0);
    CHECK(t.match_probability < 1);
    CHECK(t.similarity >= -1);
    CHECK(t.similarity <= 1);
    CHECK(t.embedding.size() == 16);
    CHECK(t.features.rows == t.tokens);
    CHECK_FALSE(t.truncated);
  }
  // The same image again: the cache answers, the scores are the same.
  auto second = Run(**engine, match);
  REQUIRE(second.ok());
  CHECK((*engine)->Stats().images_encoded == 1);
  CHECK((*engine)->Stats().image_cache_hits == 1);
  CHECK(second->texts[1].similarity == first->texts[1].similarity);
  CHECK(second->texts[1].match_probability == first->texts[1].match_probability);
  // Texts alone: the same embeddings as in the match.
  auto texts = Run(**engine, RetrievalRequest{{}, std::nullopt, {"a cup of coffee"}, false, false});
  REQUIRE(texts.ok());
  CHECK(texts->image_embeddings.rows == 0);
  REQUIRE(texts->texts.size() == 1);
  for (size_t i = 0; i < 16; ++i) CHECK(texts->texts[0].embedding[i] == Approx(first->texts[1].embedding[i]).margin(1e-6));
  CHECK((*engine)->Stats().kv_blocks_total == 0);
}

TEST_CASE("retrieval engine: concurrent requests batch their texts and get their own results") {
  auto engine = Engine::Start({Model()});
  REQUIRE(engine.ok());
  const std::vector<std::string> texts = {"a photo of a cat", "a cup of coffee on a saucer", "an astronaut in a suit"};
  std::vector<absl::StatusOr<RetrievalResult>> alone;
  for (int i = 0; i < 3; ++i) alone.push_back(Run(**engine, RetrievalRequest{Pixels(i), std::nullopt, texts, true, false}));
  std::vector<std::shared_ptr<RetrievalWaiter>> sinks;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 3; ++i) {
      sinks.push_back(std::make_shared<RetrievalWaiter>());
      REQUIRE((*engine)->SubmitRetrieval(RetrievalRequest{Pixels(i), std::nullopt, texts, true, false}, sinks.back()).ok());
    }
  }
  for (size_t k = 0; k < sinks.size(); ++k) {
    auto got = sinks[k]->Wait();
    REQUIRE(got.ok());
    const auto& want = *alone[k % 3];
    for (size_t t = 0; t < texts.size(); ++t) {
      INFO("request " << k << " text " << t);
      CHECK(got->texts[t].similarity == Approx(want.texts[t].similarity).margin(1e-5));
      CHECK(got->texts[t].match_probability == Approx(want.texts[t].match_probability).margin(1e-5));
    }
  }
}

TEST_CASE("retrieval engine: bad requests are refused naming the problem, long texts are cut and flagged") {
  EngineConfig config;
  config.max_texts = 2;
  config.max_text_tokens = 4;
  auto engine = Engine::Start({Model()}, config);
  REQUIRE(engine.ok());
  const auto refused = [&](RetrievalRequest r, const std::string& what) {
    auto id = (*engine)->SubmitRetrieval(std::move(r), std::make_shared<RetrievalWaiter>());
    INFO(id.status().ToString());
    CHECK(absl::IsInvalidArgument(id.status()));
    CHECK_THAT(std::string(id.status().message()), Catch::Contains(what));
  };
  refused(RetrievalRequest{Pixels(0), std::nullopt, {}, true, false}, "texts is empty");
  refused(RetrievalRequest{{}, std::nullopt, {"a cat"}, true, false}, "matching needs an image");
  refused(RetrievalRequest{{}, std::nullopt, {}, false, false}, "give an image, texts or both");
  refused(RetrievalRequest{Pixels(0), std::nullopt, {"a", "b", "c"}, true, false}, "max_texts");
  refused(RetrievalRequest{Pixels(0), std::nullopt, {"ok", "bad \xff"}, true, false}, "texts[1] is not valid UTF-8");
  refused(RetrievalRequest{std::vector<float>(10, 0.f), std::nullopt, {"a"}, true, false}, "pixel values");
  auto unknown = (*engine)->SubmitRetrieval(RetrievalRequest{{}, uint64_t{12345}, {"a"}, true, false},
                                            std::make_shared<RetrievalWaiter>());
  CHECK(absl::IsNotFound(unknown.status()));
  // Generation on a retrieval checkpoint: FAILED_PRECONDITION naming the model.
  auto generate = (*engine)->Submit(EngineRequest{Pixels(0), "", {}, 0, std::nullopt}, std::make_shared<RetrievalWaiter>());
  CHECK(absl::IsFailedPrecondition(generate.status()));
  CHECK_THAT(std::string(generate.status().message()), Catch::Contains("blip2-tiny-itm"));
  // Cut to [CLS] + 2 pieces + [SEP], and flagged; short texts are not.
  auto cut = Run(**engine, RetrievalRequest{Pixels(0), std::nullopt, {"a photo of a cat", "cat"}, true, false});
  REQUIRE(cut.ok());
  CHECK(cut->texts[0].truncated);
  CHECK(cut->texts[0].tokens == 4);
  CHECK_FALSE(cut->texts[1].truncated);
  CHECK(cut->texts[1].tokens == 3);
}

TEST_CASE("retrieval engine: a generation checkpoint refuses retrieval with FAILED_PRECONDITION") {
  auto engine = Engine::Start({testing::FixturesDir() + "/blip2-tiny-opt"});
  REQUIRE(engine.ok());
  CHECK_FALSE((*engine)->serves_retrieval());
  auto id = (*engine)->SubmitRetrieval(RetrievalRequest{{}, std::nullopt, {"a cat"}, false, false},
                                       std::make_shared<RetrievalWaiter>());
  CHECK(absl::IsFailedPrecondition(id.status()));
  CHECK_THAT(std::string(id.status().message()), Catch::Contains("not a retrieval checkpoint"));
}

TEST_CASE("retrieval engine: a generation and a retrieval checkpoint share one engine and give what each gives alone") {
  const std::string opt = testing::FixturesDir() + "/blip2-tiny-opt";
  const std::vector<std::string> texts = {"a photo of a cat", "a cup of coffee"};
  const RetrievalRequest match{Pixels(0), std::nullopt, texts, true, false};
  EngineRequest caption{testing::FixturePixels(opt, "chelsea"), "", {}, 0, std::nullopt};
  caption.overrides.max_new_tokens = 6;
  // What each checkpoint's engine gives alone.
  absl::StatusOr<RetrievalResult> match_alone;
  absl::StatusOr<CaptionResult> caption_alone;
  {
    auto retrieval = Engine::Start({Model()});
    REQUIRE(retrieval.ok());
    match_alone = Run(**retrieval, match);
    auto generation = Engine::Start({opt});
    REQUIRE(generation.ok());
    auto sink = std::make_shared<WaitingSink>();
    REQUIRE((*generation)->Submit(caption, sink).ok());
    caption_alone = sink->Wait();
  }
  REQUIRE(match_alone.ok());
  REQUIRE(caption_alone.ok());

  auto engine = Engine::Start({opt}, {}, Model());
  REQUIRE(engine.ok());
  Engine* retrieval = (*engine)->retrieval();
  REQUIRE(retrieval != nullptr);
  REQUIRE(retrieval != engine->get());
  CHECK((*engine)->serves_generation());
  CHECK(retrieval->serves_retrieval());
  CHECK_FALSE(retrieval->serves_generation());
  CHECK(retrieval->spec().model_dir == Model());
  const std::vector<int64_t> shape = retrieval->pixel_shape();
  CHECK(static_cast<size_t>(shape[0] * shape[1] * shape[2]) == Pixels(0).size());
  CHECK(retrieval->retrieval() == retrieval);
  // Each handle refuses the other model's work.
  CHECK(absl::IsFailedPrecondition((*engine)->SubmitRetrieval(match, std::make_shared<RetrievalWaiter>()).status()));
  CHECK(absl::IsFailedPrecondition(retrieval->Submit(caption, std::make_shared<WaitingSink>()).status()));
  // Interleaved: captions and matches in flight together on the one thread.
  std::vector<std::shared_ptr<WaitingSink>> captions;
  std::vector<std::shared_ptr<RetrievalWaiter>> matches;
  for (int i = 0; i < 4; ++i) {
    captions.push_back(std::make_shared<WaitingSink>());
    REQUIRE((*engine)->Submit(caption, captions.back()).ok());
    matches.push_back(std::make_shared<RetrievalWaiter>());
    REQUIRE(retrieval->SubmitRetrieval(match, matches.back()).ok());
  }
  for (int i = 0; i < 4; ++i) {
    auto got = captions[i]->Wait();
    REQUIRE(got.ok());
    CHECK(got->sequences[0].token_ids == caption_alone->sequences[0].token_ids);
    auto scored = matches[i]->Wait();
    REQUIRE(scored.ok());
    for (size_t t = 0; t < texts.size(); ++t) {
      CHECK(scored->texts[t].similarity == Approx(match_alone->texts[t].similarity).margin(1e-5));
      CHECK(scored->texts[t].match_probability == Approx(match_alone->texts[t].match_probability).margin(1e-5));
    }
  }
  // One engine: one set of counters, each model's images in its own cache.
  const EngineStats stats = (*engine)->Stats();
  CHECK(stats.finished == 8);
  CHECK(stats.images_encoded == 2);
  CHECK(stats.image_cache_entries == 2);
  // Images registered for the generation model are not the retrieval model's.
  auto registered = std::make_shared<WaitingSink>();
  auto key = (*engine)->RegisterImage(testing::FixturePixels(opt, "chelsea"), registered);
  REQUIRE(key.ok());
  REQUIRE(registered->Wait().ok());
  auto by_key = retrieval->SubmitRetrieval(RetrievalRequest{{}, *key, texts, true, false},
                                           std::make_shared<RetrievalWaiter>());
  CHECK(absl::IsNotFound(by_key.status()));
  CHECK_THAT(std::string(by_key.status().message()), Catch::Contains("retrieval model"));
  // The retrieval handle's registrations are its own (another image, so the keys differ).
  auto own = std::make_shared<WaitingSink>();
  auto own_key = retrieval->RegisterImage(Pixels(1), own);
  REQUIRE(own_key.ok());
  REQUIRE(*own_key != *key);
  REQUIRE(own->Wait().ok());
  auto by_own_key = Run(*retrieval, RetrievalRequest{{}, *own_key, texts, true, false});
  auto by_pixels = Run(*retrieval, RetrievalRequest{Pixels(1), std::nullopt, texts, true, false});
  REQUIRE(by_own_key.ok());
  REQUIRE(by_pixels.ok());
  CHECK(by_own_key->texts[0].similarity == by_pixels->texts[0].similarity);
  CHECK(retrieval->ReleaseImage(*own_key).ok());
  CHECK(absl::IsNotFound((*engine)->ReleaseImage(*own_key)));
  CHECK((*engine)->ReleaseImage(*key).ok());
}

TEST_CASE("retrieval engine: a second checkpoint must be a retrieval one beside a generation one") {
  const std::string opt = testing::FixturesDir() + "/blip2-tiny-opt";
  CHECK((*Engine::Start({opt}))->retrieval() == nullptr);
  auto itm = Engine::Start({Model()});
  REQUIRE(itm.ok());
  CHECK((*itm)->retrieval() == itm->get());
  auto not_retrieval = Engine::Start({opt}, {}, opt);
  CHECK(absl::IsInvalidArgument(not_retrieval.status()));
  CHECK_THAT(std::string(not_retrieval.status().message()), Catch::Contains("is not a retrieval checkpoint"));
  auto two_retrieval = Engine::Start({Model()}, {}, Model());
  CHECK(absl::IsInvalidArgument(two_retrieval.status()));
  CHECK_THAT(std::string(two_retrieval.status().message()), Catch::Contains("is a retrieval checkpoint already"));
}

}  // namespace
}  // namespace blip2::engine
