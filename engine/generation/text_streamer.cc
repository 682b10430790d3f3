#include "engine/generation/text_streamer.h"

#include <algorithm>

namespace blip2::engine {

size_t FindStop(const std::string& text, const std::vector<std::string>& stops) {
  size_t first = std::string::npos;
  for (const std::string& s : stops) first = std::min(first, text.find(s));
  return first;
}

TextStreamer::TextStreamer(const Tokenizer& tok, std::vector<std::string> stops, TextPieceSink sink)
    : decoder_(tok, /*skip_special_tokens=*/true), stops_(std::move(stops)), sink_(std::move(sink)) {
  for (const auto& s : stops_) hold_ = std::max(hold_, s.size() - 1);
}

bool TextStreamer::Push(int64_t token) {
  text_ += decoder_.Push(token).value_or("");
  const size_t stop = FindStop(text_, stops_);
  if (stop != std::string::npos) {
    Emit(stop);
    return true;
  }
  // Hold back what could still become a stop string, without splitting a character.
  size_t safe = text_.size() > hold_ ? text_.size() - hold_ : 0;
  while (safe > emitted_ && safe < text_.size() && (static_cast<uint8_t>(text_[safe]) & 0xC0) == 0x80) --safe;
  Emit(safe);
  return false;
}

void TextStreamer::Finish() {
  text_ += decoder_.Finish();
  Emit(std::min(text_.size(), FindStop(text_, stops_)));
}

void TextStreamer::Emit(size_t upto) {
  if (upto > emitted_) {
    if (sink_) sink_(text_.substr(emitted_, upto - emitted_));
    emitted_ = upto;
  }
}

absl::StatusOr<std::string> FinalText(const Tokenizer& tok, const std::vector<int64_t>& tokens, bool ended_by_stop_id,
                                      const std::vector<std::string>& stops) {
  std::vector<int64_t> ids = tokens;
  if (ended_by_stop_id && !ids.empty()) ids.pop_back();
  absl::StatusOr<std::string> text = tok.Decode(ids, /*skip_special_tokens=*/true);
  if (!text.ok()) return text;
  if (const size_t stop = FindStop(*text, stops); stop != std::string::npos) text->resize(stop);
  return text;
}

}  // namespace blip2::engine
