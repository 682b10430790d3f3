// BERT's WordPiece tokenizer, as transformers' BertTokenizerFast runs it from
// tokenizer.json: the retrieval checkpoints' Q-Former text side. Torch-free.
//
//  1. Added tokens ([CLS], [SEP], [MASK], ...) are matched in the raw text.
//  2. BertNormalizer: control characters dropped and whitespace made spaces
//     (clean_text), spaces around CJK ideographs (handle_chinese_chars),
//     accents stripped (NFD, then nonspacing marks dropped; by default when
//     lowercasing) and lowercasing.
//  3. BertPreTokenizer: split on whitespace, every punctuation character its
//     own word.
//  4. WordPiece: greedy longest match, "##" before continuation pieces; a word
//     with no full cover (or over max_input_chars_per_word) is [UNK].
//  5. The template: [CLS] pieces [SEP], cut at the right to max_length.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace blip2::engine {

class WordPieceTokenizer {
 public:
  // `model_dir`/tokenizer.json; NOT_FOUND names the file when it is missing.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Load(const std::string& model_dir);
  // `file` names the source in error messages.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> FromJson(const std::string& json_text,
                                                                      const std::string& file);

  struct Encoding {
    std::vector<int64_t> ids;  // [CLS] ... [SEP]
    bool truncated = false;    // pieces were cut to fit max_length
  };
  // `text` must be valid UTF-8. max_length counts [CLS] and [SEP] (at least 2).
  Encoding Encode(std::string_view text, int64_t max_length) const;
  // The normalised text (step 2), for tests.
  std::string Normalize(std::string_view text) const;

  int64_t pad_id() const { return pad_id_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }

 private:
  WordPieceTokenizer() = default;
  // Appends the ids of `text` between added tokens: normalise, split, pieces.
  // Stops once `ids` holds more than `stop_after` pieces (the rest would be cut).
  void EncodeOrdinary(std::string_view text, std::vector<int64_t>* ids, size_t stop_after) const;
  void EncodeWord(const std::u32string& word, std::vector<int64_t>* ids) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::pair<std::string, int64_t>> added_;  // longest first
  std::string prefix_ = "##";
  int64_t max_word_chars_ = 100;
  int64_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, pad_id_ = 0;
  bool clean_text_ = true, chinese_chars_ = true, strip_accents_ = true, lowercase_ = true;
};

}  // namespace blip2::engine
