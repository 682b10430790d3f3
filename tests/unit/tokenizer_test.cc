// The byte-level BPE tokenizer and UTF-8 helpers on hand-made inputs: the
// GPT-2 split, broken UTF-8 in decoding and streaming, and malformed files.
#include <climits>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/wordpiece_tokenizer.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

using nlohmann::json;

json FixtureTokenizerJson() {
  return json::parse(testing::ReadFileOrDie(testing::FixturesDir() + "/blip2-tiny-opt/tokenizer.json"));
}

TEST_CASE("tokenizer: the GPT-2 pre-tokenizer pattern") {
  using V = std::vector<std::string>;
  CHECK(SplitGpt2("Hello world") == V{"Hello", " world"});
  CHECK(SplitGpt2("don't stop") == V{"don", "'t", " stop"});
  CHECK(SplitGpt2("a  b") == V{"a", " ", " b"});
  CHECK(SplitGpt2("a\n\nb") == V{"a", "\n", "\n", "b"});
  CHECK(SplitGpt2("x  ") == V{"x", "  "});
  CHECK(SplitGpt2("abc123 !?") == V{"abc", "123", " !?"});
  CHECK(SplitGpt2("café 東京") == V{"café", " 東京"});
}

TEST_CASE("utf8: lossy decoding replaces each maximal ill-formed subpart") {
  CHECK(Utf8Lossy("ok") == "ok");
  CHECK(Utf8Lossy("\xE2\x82") == "\xEF\xBF\xBD");            // truncated 3-byte sequence: one U+FFFD
  CHECK(Utf8Lossy("\xFF" "a") == "\xEF\xBF\xBD" "a");
  CHECK(Utf8Lossy("\xE0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // E0 80 is not a valid start
  CHECK(IncompleteUtf8Tail("a\xE2\x82") == 2);
  CHECK(IncompleteUtf8Tail("a\xFF") == 0);
  CHECK(IncompleteUtf8Tail("\xE2\x82\xAC") == 0);
}

TEST_CASE("tokenizer: streaming never emits half a character and ends equal to one-shot decoding") {
  auto tok = BpeTokenizer::Load(testing::FixturesDir() + "/blip2-tiny-opt");
  REQUIRE(tok.ok());
  // A multi-byte text whose characters the tiny vocabulary splits into single bytes.
  auto ids = (*tok)->Encode("東京 🙂 café");
  REQUIRE(ids.ok());
  StreamDecoder stream(**tok, true);
  std::string streamed;
  for (int64_t id : *ids) {
    auto piece = stream.Push(id);
    REQUIRE(piece.ok());
    CHECK(IsValidUtf8(*piece));
    streamed += *piece;
  }
  streamed += stream.Finish();
  CHECK(streamed == *(*tok)->Decode(*ids, true));
  CHECK(streamed == "東京 🙂 café");
  // An unfinished character at the end becomes U+FFFD, as the one-shot decode does.
  std::vector<int64_t> cut(ids->begin(), ids->begin() + 2);
  StreamDecoder partial(**tok, true);
  std::string text;
  for (int64_t id : cut) text += *partial.Push(id);
  text += partial.Finish();
  CHECK(text == *(*tok)->Decode(cut, true));
}

TEST_CASE("tokenizer: special tokens, added tokens and decode options") {
  auto tok = BpeTokenizer::Load(testing::FixturesDir() + "/blip2-tiny-opt");
  REQUIRE(tok.ok());
  const int64_t image = (*tok)->TokenToId("<image>");
  REQUIRE(image >= 0);
  auto ids = (*tok)->Encode("<image><image>a photo");
  REQUIRE(ids.ok());
  CHECK((*ids)[0] == (*tok)->TokenToId("</s>"));  // the post-processor's BOS
  CHECK((*ids)[1] == image);
  CHECK((*ids)[2] == image);
  CHECK(*(*tok)->Decode(*ids, /*skip_special_tokens=*/true) == "a photo");
  CHECK(*(*tok)->Decode(*ids, /*skip_special_tokens=*/false) == "</s><image><image>a photo");
  CHECK((*tok)->Encode("a", /*add_special_tokens=*/false)->size() == 1);
}

TEST_CASE("tokenizer: bad input is refused with a clear error") {
  auto tok = BpeTokenizer::Load(testing::FixturesDir() + "/blip2-tiny-opt");
  REQUIRE(tok.ok());
  const absl::Status utf8 = (*tok)->Encode("bad \xC3\x28 text").status();
  CHECK(utf8.code() == absl::StatusCode::kInvalidArgument);
  CHECK(utf8.message().find("UTF-8") != std::string::npos);
  const absl::Status id = (*tok)->Decode({5, 999999}, true).status();
  CHECK(id.code() == absl::StatusCode::kInvalidArgument);
  CHECK(id.message().find("token id 999999 is outside the vocabulary") != std::string::npos);
  CHECK_FALSE((*tok)->Decode({-1}, true).ok());

  json unknown_model = FixtureTokenizerJson();
  unknown_model["model"]["type"] = "Unigram";
  const absl::Status u = BpeTokenizer::FromTokenizerJson(unknown_model.dump(), "tokenizer.json").status();
  CHECK(u.message().find("tokenizer.json: model.type \"Unigram\" is not supported") != std::string::npos);

  json no_merges = FixtureTokenizerJson();
  no_merges["model"].erase("merges");
  CHECK(BpeTokenizer::FromTokenizerJson(no_merges.dump(), "tokenizer.json").status().message().find(
            "model.merges is missing") != std::string::npos);

  json bad_pre = FixtureTokenizerJson();
  bad_pre["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\d"}}}, {"behavior", "Isolated"}};
  CHECK_FALSE(BpeTokenizer::FromTokenizerJson(bad_pre.dump(), "tokenizer.json").ok());
  CHECK_FALSE(BpeTokenizer::FromTokenizerJson("{not json", "tokenizer.json").ok());
}

// The textbook BPE loop (rescan the word per merge), as the reference for ours.
std::vector<std::string> NaiveBpe(const std::string& word, const std::map<std::string, int>& ranks) {
  std::vector<std::string> symbols;
  for (char c : word) symbols.emplace_back(1, c);
  while (symbols.size() > 1) {
    int best_rank = INT_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = ranks.find(symbols[i] + " " + symbols[i + 1]);
      if (it != ranks.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT_MAX) break;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  return symbols;
}

TEST_CASE("bpe: merges equal the textbook loop on random words, and a 200 KB word is quick") {
  // The fixture tokenizer with merges among a, b and c that compete and overlap.
  json j = FixtureTokenizerJson();
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "a"}, {"b", "b"}, {"a", "b"}, {"aa", "a"}, {"ab", "c"}, {"c", "c"}, {"b", "aa"},
      {"cc", "a"}, {"aaa", "aaa"}, {"bb", "b"}, {"abc", "abc"}, {"c", "a"}};
  std::map<std::string, int> ranks;
  int64_t next_id = static_cast<int64_t>(j["model"]["vocab"].size());
  for (const auto& [left, right] : merges) {
    ranks.emplace(left + " " + right, static_cast<int>(j["model"]["merges"].size()));
    j["model"]["merges"].push_back({left, right});
    if (!j["model"]["vocab"].contains(left + right)) j["model"]["vocab"][left + right] = next_id++;
  }
  // The fixture's own merges among single letters come first; keep their ranks.
  for (size_t r = 0; r < j["model"]["merges"].size(); ++r) {
    const auto& m = j["model"]["merges"][r];
    ranks[m[0].get<std::string>() + " " + m[1].get<std::string>()] = std::min(
        ranks.count(m[0].get<std::string>() + " " + m[1].get<std::string>())
            ? ranks[m[0].get<std::string>() + " " + m[1].get<std::string>()] : INT_MAX,
        static_cast<int>(r));
  }
  auto tok = BpeTokenizer::FromTokenizerJson(j.dump(), "tokenizer.json");
  REQUIRE(tok.ok());
  const auto& vocab = j["model"]["vocab"];
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string word(1 + rng() % 120, 'a');
    for (char& c : word) c = "abc"[rng() % (trial % 2 == 0 ? 3 : 2)];
    std::vector<int64_t> want;
    for (const std::string& piece : NaiveBpe(word, ranks)) want.push_back(vocab.at(piece).get<int64_t>());
    auto got = (*tok)->Encode(word, /*add_special_tokens=*/false);
    REQUIRE(got.ok());
    INFO(word);
    CHECK(*got == want);
  }
  // One word of 200,000 letters: the old loop rescanned it per merge (hours);
  // this one takes milliseconds. "a a" ranks first, so it is 100,000 "aa".
  auto long_word = (*tok)->Encode(std::string(200000, 'a'), false);
  REQUIRE(long_word.ok());
  CHECK(*long_word == std::vector<int64_t>(100000, vocab.at("aa").get<int64_t>()));
  CHECK(NaiveBpe(std::string(2000, 'a'), ranks) == std::vector<std::string>(1000, "aa"));
}

TEST_CASE("tokenizer: vocab.json + merges.txt fallback equals tokenizer.json") {
  const json j = FixtureTokenizerJson();
  const std::string dir = testing::MakeTempDir();
  testing::WriteFile(dir + "/vocab.json", j["model"]["vocab"].dump());
  std::string merges = "#version: 0.2\n";
  for (const auto& m : j["model"]["merges"]) merges += m[0].get<std::string>() + " " + m[1].get<std::string>() + "\n";
  testing::WriteFile(dir + "/merges.txt", merges);
  testing::WriteFile(dir + "/tokenizer_config.json",
                     R"({"add_bos_token": true, "bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})");
  testing::WriteFile(dir + "/added_tokens.json", R"({"<image>": 400})");
  auto slow = BpeTokenizer::Load(dir);
  auto fast = BpeTokenizer::Load(testing::FixturesDir() + "/blip2-tiny-opt");
  REQUIRE(slow.ok());
  REQUIRE(fast.ok());
  for (const char* text : {"The quick brown fox.", "<image>Question: what is this? Answer:", " leading  spaces\t"}) {
    INFO(text);
    CHECK(*(*slow)->Encode(text) == *(*fast)->Encode(text));
  }
}

}  // namespace
}  // namespace blip2::engine

namespace blip2::engine {
namespace {

TEST_CASE("wordpiece: a long text is encoded only as far as max_length needs, with the same ids") {
  // tokenizer_fuzz found a 100 KB text that took over 10 s: every word was
  // encoded before the cut. Now encoding stops past the room; ids and the
  // truncated flag are what encoding everything and cutting gives.
  auto tok = WordPieceTokenizer::Load(testing::FixturesDir() + "/blip2-tiny-itm");
  REQUIRE(tok.ok());
  std::string word;
  for (int i = 0; i < 100; ++i) word += static_cast<char>('a' + (i * 7) % 26);
  std::string huge, start;
  for (int i = 0; i < 3000; ++i) huge += word + " ";
  for (int i = 0; i < 40; ++i) start += word + " ";
  const auto cut = (*tok)->Encode(huge, 32);
  CHECK(cut.truncated);
  CHECK(cut.ids.size() == 32);
  CHECK(cut.ids == (*tok)->Encode(start, 32).ids);
  const auto fits = (*tok)->Encode("a cat", 32);
  CHECK_FALSE(fits.truncated);
  const auto exact = (*tok)->Encode("a cat", static_cast<int64_t>(fits.ids.size()));  // room for exactly its pieces
  CHECK_FALSE(exact.truncated);
  CHECK(exact.ids == fits.ids);
  CHECK((*tok)->Encode("a cat", static_cast<int64_t>(fits.ids.size()) - 1).truncated);
}

}  // namespace
}  // namespace blip2::engine
