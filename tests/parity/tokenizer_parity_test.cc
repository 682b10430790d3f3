// Tokenizer parity with transformers, data-driven over any fixtures folder:
// every model whose tokenizer.json is byte-level BPE and whose reference.json
// has a "tokenizer" table of strings -> {ids, decoded_skip_special}.
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/unigram_tokenizer.h"
#include "engine/tokenizer/wordpiece_tokenizer.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

// 64-bit FNV-1a of `bytes` as 16 hex digits: names the exact file a
// reference was made from (scripts/make_wordpiece_reference.py computes it too).
std::string Fnv1a64Hex(const std::string& bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001B3ull;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

bool HasTokenizer(const FixtureModel& m, const std::string& type) {
  auto text = common::ReadFile(m.dir + "/tokenizer.json");
  if (!text.ok()) return false;
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  return j.is_object() && j.contains("model") && j["model"].value("type", "") == type;
}

// Every string of the model's "tokenizer" table: ids, decoded text, and the
// streamed text (with and without special tokens) equal to Decode.
int CheckTokenizer(const FixtureModel& m, const engine::Tokenizer& tok) {
  int checked = 0;
  for (const auto& [text, expected] : m.reference["tokenizer"].items()) {
    INFO(m.name << ": \"" << text << "\"");
    const std::vector<int64_t> want = expected["ids"].get<std::vector<int64_t>>();
    auto ids = tok.Encode(text);
    REQUIRE(ids.ok());
    CHECK(*ids == want);
    auto decoded = tok.Decode(want, /*skip_special_tokens=*/true);
    REQUIRE(decoded.ok());
    CHECK(*decoded == expected["decoded_skip_special"].get<std::string>());
    for (const bool skip : {true, false}) {
      engine::StreamDecoder stream(tok, skip);
      std::string streamed;
      for (int64_t id : want) streamed += *stream.Push(id);
      streamed += stream.Finish();
      CHECK(streamed == *tok.Decode(want, skip));
    }
    ++checked;
  }
  return checked;
}

TEST_CASE("parity: byte-level BPE tokenizer ids and decoded text match transformers") {
  int checked = 0;
  for (const FixtureModel& m : DiscoverModels(FixturesDir())) {
    if (!HasTokenizer(m, "BPE") || !m.reference.contains("tokenizer")) continue;
    auto tok = engine::BpeTokenizer::Load(m.dir);
    INFO(m.name << ": " << tok.status().ToString());
    REQUIRE(tok.ok());
    checked += CheckTokenizer(m, **tok);
  }
  CHECK(checked > 0);
}

TEST_CASE("parity: SentencePiece unigram tokenizer ids and decoded text match transformers") {
  int checked = 0;
  for (const FixtureModel& m : DiscoverModels(FixturesDir())) {
    if (!HasTokenizer(m, "Unigram") || !m.reference.contains("tokenizer")) continue;
    auto tok = engine::UnigramTokenizer::Load(m.dir);
    INFO(m.name << ": " << tok.status().ToString());
    REQUIRE(tok.ok());
    checked += CheckTokenizer(m, **tok);
  }
  CHECK(checked > 0);
}

// Retrieval fixtures: reference.json "texts" with transformers' padded
// "input_ids" and "attention_mask".
TEST_CASE("parity: WordPiece tokenizer ids match transformers") {
  int checked = 0;
  for (const FixtureModel& m : DiscoverModels(FixturesDir())) {
    if (!HasTokenizer(m, "WordPiece") || !m.reference.contains("texts")) continue;
    auto tok = engine::WordPieceTokenizer::Load(m.dir);
    INFO(m.name << ": " << tok.status().ToString());
    REQUIRE(tok.ok());
    const auto texts = m.reference["texts"].get<std::vector<std::string>>();
    const auto ids = m.reference["input_ids"].get<std::vector<std::vector<int64_t>>>();
    const auto mask = m.reference["attention_mask"].get<std::vector<std::vector<int64_t>>>();
    for (size_t i = 0; i < texts.size(); ++i) {
      std::vector<int64_t> want;
      for (size_t t = 0; t < ids[i].size(); ++t) {
        if (mask[i][t] != 0) want.push_back(ids[i][t]);
      }
      CHECK((*tok)->Encode(texts[i], 512).ids == want);
      CHECK(ids[i].back() == (mask[i].back() != 0 ? ids[i].back() : (*tok)->pad_id()));
      ++checked;
    }
  }
  CHECK(checked > 0);
}

// tests/data/wordpiece_reference.json: strings for every normaliser rule, with
// and without truncation, made by scripts/make_wordpiece_reference.py from one
// exact tokenizer.json (the bundled retrieval fixture's). They are checked
// against that file, identified by its content hash, whatever fixtures folder
// the other parity tests read.
TEST_CASE("parity: WordPiece tokenizer on tricky strings matches transformers") {
  int checked = 0;
  const std::string data = std::string(BLIP2_SOURCE_DIR) + "/tests/data/wordpiece_reference.json";
  const nlohmann::json reference = nlohmann::json::parse(*common::ReadFile(data));
  const std::string tokenizer_dir = std::string(BLIP2_SOURCE_DIR) + "/" + reference["tokenizer_dir"].get<std::string>();
  auto tokenizer_json = common::ReadFile(tokenizer_dir + "/tokenizer.json");
  REQUIRE(tokenizer_json.ok());
  INFO(data << " was made from another " << tokenizer_dir
            << "/tokenizer.json: rerun scripts/make_wordpiece_reference.py");
  REQUIRE(Fnv1a64Hex(*tokenizer_json) == reference["tokenizer_json_fnv1a64"].get<std::string>());
  auto tok = engine::WordPieceTokenizer::Load(tokenizer_dir);
  REQUIRE(tok.ok());
  for (const auto& c : reference["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const int64_t max_length = c["max_length"].get<int64_t>();
    INFO("\"" << text << "\" max_length " << max_length);
    const auto got = (*tok)->Encode(text, max_length > 0 ? max_length : 1 << 20);
    CHECK(got.ids == c["ids"].get<std::vector<int64_t>>());
    CHECK(got.truncated == (max_length > 0 && static_cast<int64_t>(got.ids.size()) == max_length));
    ++checked;
  }
  for (const auto& [text, normalized] : reference["normalized"].items()) {
    INFO("normalize \"" << text << "\"");
    CHECK((*tok)->Normalize(text) == normalized.get<std::string>());
  }
  std::printf("PARITY WordPiece: %d encodings compared\n", checked);
  CHECK(checked > 20);
}

TEST_CASE("wordpiece tokenizer: bad files name the problem") {
  CHECK(absl::IsNotFound(engine::WordPieceTokenizer::Load("/nonexistent").status()));
  CHECK_THAT(engine::WordPieceTokenizer::FromJson("{}", "t.json").status().ToString(),
             Catch::Contains("t.json: not a tokenizer.json"));
  CHECK_THAT(engine::WordPieceTokenizer::FromJson(R"({"model": {"type": "BPE"}})", "t.json").status().ToString(),
             Catch::Contains("model.type is not \"WordPiece\""));
  CHECK_THAT(engine::WordPieceTokenizer::FromJson(R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})", "t.json")
                 .status()
                 .ToString(),
             Catch::Contains("[UNK] is not in the vocabulary"));
}

TEST_CASE("unigram tokenizer: bad files name the problem") {
  CHECK(absl::IsNotFound(engine::UnigramTokenizer::Load("/nonexistent").status()));
  CHECK_THAT(engine::UnigramTokenizer::FromJson("{}", "t.json").status().ToString(),
             Catch::Contains("t.json: not a tokenizer.json"));
  CHECK_THAT(engine::UnigramTokenizer::FromJson(R"({"model": {"type": "BPE"}})", "t.json").status().ToString(),
             Catch::Contains("model.type is not \"Unigram\""));
  CHECK_THAT(engine::UnigramTokenizer::FromJson(R"({"model": {"type": "Unigram", "vocab": [["a"]]}})", "t.json")
                 .status()
                 .ToString(),
             Catch::Contains("[piece, score]"));
}

}  // namespace
}  // namespace blip2::testing
