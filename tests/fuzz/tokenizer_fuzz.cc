// Tokenizers: tokenizer.json of each kind (byte-level BPE, SentencePiece
// unigram, WordPiece) from arbitrary bytes, and the fixture tokenizers'
// Encode, Decode and streaming decode on arbitrary text (invalid UTF-8
// included) and ids (out of range included). The first byte chooses.
#include <memory>

#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/unigram_tokenizer.h"
#include "engine/tokenizer/wordpiece_tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace blip2::engine;

template <class T>
const T& Fixture(const std::unique_ptr<T>& t) {
  if (!t) std::abort();  // the fixture folders are part of the repository
  return *t;
}

const BpeTokenizer& Bpe() {
  static const auto t = BpeTokenizer::Load(std::string(BLIP2_FIXTURES_DIR) + "/blip2-tiny-opt").value_or(nullptr);
  return Fixture(t);
}
const UnigramTokenizer& Unigram() {
  static const auto t =
      UnigramTokenizer::Load(std::string(BLIP2_FIXTURES_DIR) + "/blip2-tiny-flan-t5").value_or(nullptr);
  return Fixture(t);
}
const WordPieceTokenizer& WordPiece() {
  static const auto t =
      WordPieceTokenizer::Load(std::string(BLIP2_FIXTURES_DIR) + "/blip2-tiny-itm").value_or(nullptr);
  return Fixture(t);
}

// Text in, ids back out, and ids from the raw bytes (two bytes each, some
// beyond the vocabulary) through Decode and the stream decoder.
void RoundTrip(const Tokenizer& t, std::string_view bytes) {
  (void)t.Encode(bytes);
  std::vector<int64_t> ids;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    ids.push_back((static_cast<uint8_t>(bytes[i]) << 8 | static_cast<uint8_t>(bytes[i + 1])) % (t.vocab_size() + 8));
  }
  (void)t.Decode(ids, true);
  (void)t.Decode(ids, false);
  StreamDecoder stream(t, /*skip_special_tokens=*/true);
  for (int64_t id : ids) {
    if (!stream.Push(id).ok()) break;
  }
  (void)stream.Finish();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest = blip2::fuzz::Bytes(data + 1, size - 1);
  switch (data[0] % 6) {
    case 0: {
      auto t = BpeTokenizer::FromTokenizerJson(std::string(rest), "tokenizer.json");
      if (t.ok()) RoundTrip(**t, "a b");
      break;
    }
    case 1: {
      auto t = UnigramTokenizer::FromJson(std::string(rest), "tokenizer.json");
      if (t.ok()) RoundTrip(**t, "a b");
      break;
    }
    case 2: {
      auto t = WordPieceTokenizer::FromJson(std::string(rest), "tokenizer.json");
      if (t.ok()) (void)(*t)->Encode("a b", 8);
      break;
    }
    case 3:
      RoundTrip(Bpe(), rest);
      break;
    case 4:
      RoundTrip(Unigram(), rest);
      break;
    default:
      // Encode's contract is UTF-8 (the engine refuses other text first).
      if (IsValidUtf8(rest) && !rest.empty()) (void)WordPiece().Encode(rest, 2 + rest[0] % 64);
  }
  return 0;
}
