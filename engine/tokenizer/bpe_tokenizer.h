// Byte-level BPE (GPT-2 / OPT / RoBERTa style), loaded from a Hugging Face
// `tokenizer.json`, or from `vocab.json` + `merges.txt` when that is absent.
// Reproduces the `tokenizers` library: added tokens split first, the GPT-2
// pre-tokenizer pattern, byte-to-unicode mapping, merges by rank, the
// post-processor's special tokens, and byte-level decoding with U+FFFD for
// broken UTF-8. Immutable after loading; every method is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"
#include <nlohmann/json_fwd.hpp>

namespace blip2::engine {

class BpeTokenizer : public Tokenizer {
 public:
  // INVALID_ARGUMENT naming the file and field for unsupported or malformed
  // files (an unknown model type, missing merges, an unknown pre-tokenizer).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Load(const std::string& model_dir);
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromTokenizerJson(const std::string& json_text,
                                                                         const std::string& file);

  // INVALID_ARGUMENT when `text` is not valid UTF-8. `add_special_tokens` applies
  // the post-processor (OPT: a leading `</s>`).
  absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text, bool add_special_tokens) const;
  absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text) const override { return Encode(text, true); }

  // INVALID_ARGUMENT naming the id when one is outside the vocabulary.
  absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;

  // The raw bytes one token contributes to decoded text (empty for a skipped
  // special token); decoding is this, concatenated, then Utf8Lossy.
  absl::StatusOr<std::string> TokenBytes(int64_t id, bool skip_special_tokens) const;
  // Byte-level BPE has no word-initial special case: `first` changes nothing.
  absl::StatusOr<std::string> TokenBytes(int64_t id, bool skip_special_tokens, bool first) const override {
    return TokenBytes(id, skip_special_tokens);
  }

  // -1 when the token does not exist.
  int64_t TokenToId(const std::string& token) const;
  bool IsSpecial(int64_t id) const override;
  // One past the largest id (model vocabulary and added tokens).
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }

 private:
  struct AddedToken {
    std::string content;
    int64_t id = 0;
    bool special = false;
    bool lstrip = false;
    bool rstrip = false;
  };
  struct TemplatePiece {
    bool is_sequence = false;        // the text's own ids ($A)
    std::vector<int64_t> special_ids;  // or these special ids
  };

  BpeTokenizer() = default;
  absl::Status ParseModel(const nlohmann::json& model, const std::string& file);
  absl::Status ParsePreTokenizer(const nlohmann::json& pre, const std::string& file);
  absl::Status ParsePostProcessor(const nlohmann::json& post, const std::string& file);
  absl::Status ParseAddedTokens(const nlohmann::json& added, const std::string& file);
  void BuildByteMaps();

  // Appends the ids of a text segment that holds no added token.
  void EncodeOrdinary(std::string_view text, std::vector<int64_t>* ids) const;
  void EncodeWord(const std::string& mapped_word, std::vector<int64_t>* ids) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> id_to_token_;  // "" for ids that name nothing
  std::vector<uint8_t> is_added_;        // per id
  std::vector<uint8_t> is_special_;      // per id
  std::unordered_map<std::string, int> merge_rank_;  // "left right" -> rank
  std::vector<AddedToken> added_;        // longest content first, for matching
  bool add_prefix_space_ = false;
  bool split_gpt2_pattern_ = true;
  bool ignore_merges_ = false;
  int64_t unk_id_ = -1;
  std::vector<TemplatePiece> template_single_;
  bool clean_up_spaces_ = false;
  std::string byte_to_char_[256];  // byte -> UTF-8 of its printable stand-in
  std::unordered_map<char32_t, uint8_t> char_to_byte_;
};

// Splits text the way the GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does. Exposed for tests.
std::vector<std::string> SplitGpt2(std::string_view text);

}  // namespace blip2::engine
