// Text for one generated sequence as it grows: streamed pieces that never
// split a character and never show the start of a stop string before it is
// known not to be one. Internal; one instance per sequence, one thread.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/stream_decoder.h"

namespace blip2::engine {

using TextPieceSink = std::function<void(const std::string& text)>;

// Where the earliest stop string starts in `text`, or npos.
size_t FindStop(const std::string& text, const std::vector<std::string>& stops);

// A finished sequence's text: its tokens decoded without special tokens and
// without the stop id that ended it (`ended_by_stop_id`), cut before the
// first stop string.
absl::StatusOr<std::string> FinalText(const Tokenizer& tok, const std::vector<int64_t>& tokens, bool ended_by_stop_id,
                                      const std::vector<std::string>& stops);

class TextStreamer {
 public:
  // `sink` may be empty (stop strings are still detected).
  TextStreamer(const Tokenizer& tok, std::vector<std::string> stops, TextPieceSink sink);

  // Adds a token (not a stop id). Returns true when a stop string has appeared.
  bool Push(int64_t token);
  // Sends what is still held (cut before a stop string).
  void Finish();

 private:
  void Emit(size_t upto);

  StreamDecoder decoder_;
  std::vector<std::string> stops_;
  TextPieceSink sink_;
  size_t hold_ = 0;
  std::string text_;
  size_t emitted_ = 0;
};

}  // namespace blip2::engine
