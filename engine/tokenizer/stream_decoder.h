// Incremental detokenization for streaming: text is released only once its
// UTF-8 is complete, and the pieces concatenated equal Tokenizer::Decode of
// all the ids. One instance per sequence; not thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

namespace blip2::engine {

class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // The text completed by this token (often all of it, sometimes nothing while
  // a multi-byte character is split across tokens).
  absl::StatusOr<std::string> Push(int64_t id);
  // Whatever is still held; an unfinished character becomes U+FFFD.
  std::string Finish();

 private:
  const Tokenizer& tokenizer_;
  bool first_ = true;  // no token decoded yet
  bool skip_special_tokens_;
  std::string pending_;  // bytes of an unfinished character
};

}  // namespace blip2::engine
