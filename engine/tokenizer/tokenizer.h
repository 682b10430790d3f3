// What the engine needs from a tokenizer, whatever its kind: byte-level BPE
// (OPT, bpe_tokenizer.h) or SentencePiece unigram (Flan-T5,
// unigram_tokenizer.h). Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace blip2::engine {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids as transformers encodes `text`, with the special tokens the
  // checkpoint's tokenizer adds (OPT's leading </s>, T5's trailing </s>).
  virtual absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text) const = 0;
  virtual absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const = 0;
  // The bytes token `id` adds to decoded text (possibly part of a UTF-8
  // character; "" for a skipped special token). `first`: no token before it
  // was decoded (skipped special tokens do not count). Concatenated over a
  // sequence, they equal Decode.
  virtual absl::StatusOr<std::string> TokenBytes(int64_t id, bool skip_special_tokens, bool first) const = 0;
  virtual bool IsSpecial(int64_t id) const = 0;
  virtual int64_t vocab_size() const = 0;
};

}  // namespace blip2::engine
