#include "engine/tokenizer/unicode.h"

#include <algorithm>

namespace blip2::engine {
namespace {

bool InRanges(const CodeRange* ranges, size_t n, char32_t c) {
  const CodeRange* end = ranges + n;
  const CodeRange* it = std::upper_bound(ranges, end, c, [](char32_t v, const CodeRange& r) { return v < r.first; });
  return it != ranges && c <= (it - 1)->last;
}

// Length of the well-formed sequence starting at b[0] (Unicode Table 3-7), or
// how many leading bytes form its maximal ill-formed subpart, as a negative number.
int SequenceLength(std::string_view b, size_t at, bool* truncated = nullptr) {
  if (truncated != nullptr) *truncated = false;
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(b[at + i]); };
  const size_t avail = b.size() - at;
  const uint8_t c0 = byte(0);
  if (c0 < 0x80) return 1;
  int need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c0 >= 0xC2 && c0 <= 0xDF) {
    need = 2;
  } else if (c0 >= 0xE0 && c0 <= 0xEF) {
    need = 3;
    if (c0 == 0xE0) lo = 0xA0;
    if (c0 == 0xED) hi = 0x9F;
  } else if (c0 >= 0xF0 && c0 <= 0xF4) {
    need = 4;
    if (c0 == 0xF0) lo = 0x90;
    if (c0 == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int i = 1; i < need; ++i) {
    if (static_cast<size_t>(i) >= avail) {  // cut short: the prefix so far is well-formed
      if (truncated != nullptr) *truncated = true;
      return -i;
    }
    const uint8_t c = byte(i);
    const uint8_t l = i == 1 ? lo : 0x80;
    const uint8_t h = i == 1 ? hi : 0xBF;
    if (c < l || c > h) return -i;
  }
  return need;
}

}  // namespace

bool IsLetter(char32_t c) { return InRanges(unicode_tables::kLetters, unicode_tables::kLettersSize, c); }
bool IsNumber(char32_t c) { return InRanges(unicode_tables::kNumbers, unicode_tables::kNumbersSize, c); }
bool IsWhiteSpace(char32_t c) { return InRanges(unicode_tables::kWhiteSpace, unicode_tables::kWhiteSpaceSize, c); }
bool IsPunctuation(char32_t c) {
  return InRanges(unicode_tables::kPunctuation, unicode_tables::kPunctuationSize, c);
}
bool IsCategoryOther(char32_t c) { return InRanges(unicode_tables::kOther, unicode_tables::kOtherSize, c); }
bool IsNonspacingMark(char32_t c) {
  return InRanges(unicode_tables::kNonspacingMarks, unicode_tables::kNonspacingMarksSize, c);
}

namespace {

// Appends c's mapping in a table sorted by code point; false when it has none.
bool AppendMapped(const CodeMapping* table, size_t size, const char32_t* chars, char32_t c, std::u32string* out) {
  const CodeMapping* end = table + size;
  const CodeMapping* it = std::lower_bound(table, end, c, [](const CodeMapping& m, char32_t v) { return m.code < v; });
  if (it == end || it->code != c) return false;
  out->append(chars + it->offset, it->length);
  return true;
}

}  // namespace

void AppendNfd(char32_t c, std::u32string* out) {
  // Hangul syllables decompose by rule (Unicode 3.12) into two or three jamo.
  constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
  constexpr char32_t kVCount = 21, kTCount = 28, kSCount = 11172;
  if (c >= kSBase && c < kSBase + kSCount) {
    const char32_t s = c - kSBase;
    out->push_back(kLBase + s / (kVCount * kTCount));
    out->push_back(kVBase + (s % (kVCount * kTCount)) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  using namespace unicode_tables;
  if (!AppendMapped(kDecompositions, kDecompositionsSize, kDecompositionsChars, c, out)) out->push_back(c);
}

void AppendLowercase(char32_t c, std::u32string* out) {
  using namespace unicode_tables;
  if (!AppendMapped(kLowercase, kLowercaseSize, kLowercaseChars, c, out)) out->push_back(c);
}

bool IsValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const int n = SequenceLength(text, i);
    if (n < 0) return false;
    i += n;
  }
  return true;
}

std::vector<char32_t> DecodeUtf8(std::string_view text) {
  std::vector<char32_t> out;
  for (size_t i = 0; i < text.size();) {
    const int n = std::max(1, SequenceLength(text, i));
    const auto b = [&](int k) { return static_cast<uint8_t>(text[i + k]); };
    char32_t c;
    switch (n) {
      case 1: c = b(0); break;
      case 2: c = (char32_t(b(0) & 0x1F) << 6) | (b(1) & 0x3F); break;
      case 3: c = (char32_t(b(0) & 0x0F) << 12) | (char32_t(b(1) & 0x3F) << 6) | (b(2) & 0x3F); break;
      default:
        c = (char32_t(b(0) & 0x07) << 18) | (char32_t(b(1) & 0x3F) << 12) | (char32_t(b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    }
    out.push_back(c);
    i += n;
  }
  return out;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const int n = SequenceLength(bytes, i);
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD for the maximal ill-formed subpart
      i += -n;
    }
  }
  return out;
}

size_t IncompleteUtf8Tail(std::string_view bytes) {
  for (size_t k = 1; k <= 3 && k <= bytes.size(); ++k) {
    const size_t at = bytes.size() - k;
    const uint8_t c = static_cast<uint8_t>(bytes[at]);
    if (c < 0x80) return 0;
    if (c >= 0xC0) {  // a lead byte: is everything after it a valid, unfinished start?
      bool truncated = false;
      SequenceLength(bytes, at, &truncated);
      return truncated ? k : 0;
    }
  }
  return 0;
}

}  // namespace blip2::engine
