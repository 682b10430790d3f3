// Text generation through the engine's public face: streaming, stop strings,
// sampling with seeds, and requests that must be refused without harming the
// next one.
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "engine/generation/captioner.h"
#include "engine/model/safetensors.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

std::vector<float> ChelseaPixels() {
  auto file = SafetensorsFile::Open(testing::FixturesDir() + "/blip2-tiny-opt/reference.safetensors");
  REQUIRE(file.ok());
  const TensorView& v = (*file)->tensors().at("pixel_values.chelsea");
  std::vector<float> pixels(v.numel());
  std::memcpy(pixels.data(), v.data, v.nbytes);
  return pixels;
}

struct Fixture {
  std::unique_ptr<Captioner> captioner;
  std::vector<float> pixels;
  Fixture() {
    auto c = Captioner::Load({testing::FixturesDir() + "/blip2-tiny-opt"});
    REQUIRE(c.ok());
    captioner = std::move(*c);
    pixels = ChelseaPixels();
  }
  absl::StatusOr<CaptionResult> Run(GenerationOverrides o, const std::string& prompt = "",
                                    const TextSink& sink = nullptr) {
    CaptionRequest r;
    r.pixels = pixels;
    r.prompt = prompt;
    r.overrides = std::move(o);
    return captioner->Generate(r, sink);
  }
};

GenerationOverrides MaxNew(int64_t n) {
  GenerationOverrides o;
  o.max_new_tokens = n;
  return o;
}

TEST_CASE("captioner: streamed pieces add up to the final text") {
  Fixture f;
  std::string streamed;
  auto r = f.Run(MaxNew(12), "a photo of", [&](const std::string& piece) { streamed += piece; });
  REQUIRE(r.ok());
  REQUIRE(r->sequences.size() == 1);
  CHECK(streamed == r->sequences[0].text);
  CHECK(r->sequences[0].finish_reason == FinishReason::kLength);
  CHECK(r->sequences[0].token_ids.size() == 12);
}

TEST_CASE("captioner: a stop string that spans tokens ends generation and is cut from the text") {
  Fixture f;
  auto plain = f.Run(MaxNew(12));
  REQUIRE(plain.ok());
  const std::vector<int64_t>& ids = plain->sequences[0].token_ids;
  // The text of tokens 3 and 4 together: a stop string across a token boundary.
  auto stop = f.captioner->tokenizer().Decode({ids[3], ids[4]}, true);
  REQUIRE(stop.ok());
  REQUIRE_FALSE(stop->empty());
  GenerationOverrides o = MaxNew(12);
  o.stop_strings = {*stop};
  std::string streamed;
  auto r = f.Run(o, "", [&](const std::string& piece) { streamed += piece; });
  REQUIRE(r.ok());
  const std::string& full = plain->sequences[0].text;
  CHECK(r->sequences[0].finish_reason == FinishReason::kStopString);
  CHECK(r->sequences[0].text == full.substr(0, full.find(*stop)));
  CHECK(r->sequences[0].token_ids.size() <= 5);
  CHECK(streamed == r->sequences[0].text);
}

TEST_CASE("captioner: sampling is reproducible with a seed, top_k 1 is greedy") {
  Fixture f;
  GenerationOverrides o = MaxNew(10);
  o.temperature = 1.0;
  o.seed = 7;
  auto a = f.Run(o);
  auto b = f.Run(o);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->sequences[0].token_ids == b->sequences[0].token_ids);
  bool any_differs = false;
  for (uint64_t seed = 8; seed < 12; ++seed) {
    o.seed = seed;
    any_differs = any_differs || f.Run(o)->sequences[0].token_ids != a->sequences[0].token_ids;
  }
  CHECK(any_differs);
  GenerationOverrides top1 = MaxNew(10);
  top1.top_k = 1;
  top1.seed = 3;
  CHECK(f.Run(top1)->sequences[0].token_ids == f.Run(MaxNew(10))->sequences[0].token_ids);
  GenerationOverrides samples = MaxNew(6);
  samples.temperature = 1.5;
  samples.num_return_sequences = 3;
  samples.seed = 1;
  CHECK(f.Run(samples)->sequences.size() == 3);
}

TEST_CASE("captioner: bad requests are refused with a clear error, and the next request works") {
  Fixture f;
  const std::string long_prompt(2000, 'a');
  const absl::Status too_long = f.Run(MaxNew(20), long_prompt).status();
  CHECK(too_long.code() == absl::StatusCode::kInvalidArgument);
  CHECK(too_long.message().find("max_position_embeddings") != std::string::npos);
  // A short prompt that only fails because of max_new_tokens.
  const int64_t positions = f.captioner->spec().config.opt.max_position_embeddings;
  auto big = f.Run(MaxNew(positions));
  CHECK(big.status().code() == absl::StatusCode::kInvalidArgument);
  const absl::Status utf8 = f.Run(MaxNew(5), "caf\xC3").status();
  CHECK(utf8.code() == absl::StatusCode::kInvalidArgument);
  CHECK(utf8.message().find("UTF-8") != std::string::npos);
  GenerationOverrides beams = MaxNew(5);
  beams.num_beams = 0;
  CHECK(f.Run(beams).status().message().find("num_beams") != std::string::npos);
  CaptionRequest no_pixels;
  CHECK(f.captioner->Generate(no_pixels).status().code() == absl::StatusCode::kInvalidArgument);
  auto ok = f.Run(MaxNew(3), "Question: what is this? Answer:");
  REQUIRE(ok.ok());
  CHECK(ok->sequences[0].token_ids.size() == 3);
}

TEST_CASE("captioner: the prompt layout is <image> x Q, BOS, prompt, VQA uses the released prompt") {
  Fixture f;
  auto ids = f.captioner->InputIds(QuestionPrompt("what animal is this?"));
  REQUIRE(ids.ok());
  const int64_t q = f.captioner->spec().processor_num_query_tokens;
  CHECK((*ids)[0] == *f.captioner->spec().config.image_token_index);
  CHECK(f.captioner->tokenizer().Decode({(*ids)[q]}, /*skip_special_tokens=*/false).value_or("") == "</s>");
  CHECK(QuestionPrompt("what animal is this?") == "Question: what animal is this? Answer:");
  CHECK(Captioner::Load({testing::FixturesDir() + "/blip2-tiny-itm"}).status().code() ==
        absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace blip2::engine

namespace blip2::engine {
namespace {

// A copy of the tiny Flan-T5 folder without the named files.
std::string T5FolderWithout(const std::vector<std::string>& removed) {
  const std::string dir = testing::MakeTempDir();
  for (const auto& entry : std::filesystem::directory_iterator(testing::FixturesDir() + "/blip2-tiny-flan-t5")) {
    const std::string name = entry.path().filename().string();
    if (std::find(removed.begin(), removed.end(), name) == removed.end()) {
      std::filesystem::copy_file(entry.path(), dir + "/" + name);
    }
  }
  return dir;
}

TEST_CASE("captioner: Flan-T5 answers, and a folder without its tokenizer files is refused naming them") {
  auto t5 = Captioner::Load({testing::FixturesDir() + "/blip2-tiny-flan-t5"});
  REQUIRE(t5.ok());
  CaptionRequest r;
  r.pixels = ChelseaPixels();
  r.prompt = QuestionPrompt("what animal is this?");
  r.overrides.max_new_tokens = 4;
  auto answer = (*t5)->Generate(r);
  REQUIRE(answer.ok());
  CHECK(answer->sequences[0].token_ids.size() == 4);
  // T5's prompt: <image> x Q, the question's pieces, then </s>.
  auto ids = (*t5)->InputIds(r.prompt);
  REQUIRE(ids.ok());
  CHECK((*t5)->tokenizer().Decode({ids->back()}, /*skip_special_tokens=*/false).value_or("") == "</s>");

  const auto neither = Captioner::Load({T5FolderWithout({"tokenizer.json", "spiece.model"})});
  CHECK(absl::IsNotFound(neither.status()));
  CHECK_THAT(std::string(neither.status().message()), Catch::Contains("needs spiece.model"));
  const auto spiece_only = Captioner::Load({T5FolderWithout({"tokenizer.json"})});
  CHECK(absl::IsNotFound(spiece_only.status()));
  CHECK_THAT(std::string(spiece_only.status().message()), Catch::Contains("only spiece.model"));
}

}  // namespace
}  // namespace blip2::engine
