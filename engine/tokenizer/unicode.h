// UTF-8 and Unicode character classes for the tokenizers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace blip2::engine {

struct CodeRange {
  char32_t first, last;
};

// A character and what it maps to: `length` code points at `offset` of the
// table's character array.
struct CodeMapping {
  char32_t code;
  uint32_t offset;
  uint32_t length;
};

namespace unicode_tables {
extern const CodeRange kLetters[];
extern const size_t kLettersSize;
extern const CodeRange kNumbers[];
extern const size_t kNumbersSize;
extern const CodeRange kWhiteSpace[];
extern const size_t kWhiteSpaceSize;
extern const CodeRange kPunctuation[];
extern const size_t kPunctuationSize;
extern const CodeRange kOther[];
extern const size_t kOtherSize;
extern const CodeRange kNonspacingMarks[];
extern const size_t kNonspacingMarksSize;
extern const CodeMapping kDecompositions[];
extern const size_t kDecompositionsSize;
extern const char32_t kDecompositionsChars[];
extern const CodeMapping kLowercase[];
extern const size_t kLowercaseSize;
extern const char32_t kLowercaseChars[];
}  // namespace unicode_tables

bool IsLetter(char32_t c);          // \p{L}
bool IsNumber(char32_t c);          // \p{N}
bool IsWhiteSpace(char32_t c);      // \s (White_Space)
bool IsPunctuation(char32_t c);     // \p{P}
bool IsCategoryOther(char32_t c);   // \p{C}: Cc, Cf, Cn, Co, Cs
bool IsNonspacingMark(char32_t c);  // \p{Mn}
// Appends c's full canonical decomposition (NFD, without reordering marks).
void AppendNfd(char32_t c, std::u32string* out);
// Appends c's lowercase mapping (one or more code points; c when it has none).
void AppendLowercase(char32_t c, std::u32string* out);

// True when `text` is well-formed UTF-8.
bool IsValidUtf8(std::string_view text);

// Decodes well-formed UTF-8 into code points (callers validate first).
std::vector<char32_t> DecodeUtf8(std::string_view text);
void AppendUtf8(char32_t c, std::string* out);

// Bytes to text the way Rust's String::from_utf8_lossy and Python's
// decode(errors="replace") do: each maximal ill-formed subpart becomes U+FFFD.
std::string Utf8Lossy(std::string_view bytes);

// Length of a trailing sequence that is a proper prefix of some well-formed
// character (0 to 3): bytes a streaming decoder must hold until more arrive.
size_t IncompleteUtf8Tail(std::string_view bytes);

}  // namespace blip2::engine
