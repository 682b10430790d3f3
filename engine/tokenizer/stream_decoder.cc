#include "engine/tokenizer/stream_decoder.h"

#include "common/status_macros.h"
#include "engine/tokenizer/unicode.h"

namespace blip2::engine {

absl::StatusOr<std::string> StreamDecoder::Push(int64_t id) {
  ASSIGN_OR_RETURN(std::string bytes, tokenizer_.TokenBytes(id, skip_special_tokens_, first_));
  if (!(skip_special_tokens_ && tokenizer_.IsSpecial(id))) first_ = false;
  pending_ += bytes;
  // Hold back a trailing, still-valid start of a character; everything before
  // it decodes the same whatever follows.
  const size_t hold = IncompleteUtf8Tail(pending_);
  std::string text = Utf8Lossy(std::string_view(pending_).substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return text;
}

std::string StreamDecoder::Finish() {
  std::string text = Utf8Lossy(pending_);
  pending_.clear();
  return text;
}

}  // namespace blip2::engine
