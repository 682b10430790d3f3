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

namespace unicode_tables {
extern const CodeRange kLetters[];
extern const size_t kLettersSize;
extern const CodeRange kNumbers[];
extern const size_t kNumbersSize;
extern const CodeRange kWhiteSpace[];
extern const size_t kWhiteSpaceSize;
}  // namespace unicode_tables

bool IsLetter(char32_t c);      // \p{L}
bool IsNumber(char32_t c);      // \p{N}
bool IsWhiteSpace(char32_t c);  // \s (White_Space)

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
