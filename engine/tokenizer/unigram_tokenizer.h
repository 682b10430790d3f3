// The SentencePiece unigram tokenizer of the Flan-T5 checkpoints, read from
// tokenizer.json (transformers' T5TokenizerFast): the precompiled normaliser
// (SentencePiece's character map), whitespace split, "▁" word prefixes,
// Viterbi over the piece scores, "</s>" appended. Our own code, no
// libsentencepiece: Debian's carries its own protobuf 3.14, which cannot share
// a process with gRPC's protobuf 3.21. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

namespace blip2::engine {

class UnigramTokenizer : public Tokenizer {
 public:
  // `model_dir`/tokenizer.json; NOT_FOUND names the file when it is missing.
  static absl::StatusOr<std::unique_ptr<UnigramTokenizer>> Load(const std::string& model_dir);
  // `file` names the source in error messages.
  static absl::StatusOr<std::unique_ptr<UnigramTokenizer>> FromJson(const std::string& json_text,
                                                                    const std::string& file);

  // Ids as transformers encodes `text`, "</s>" last.
  absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text) const override;
  // Text of `ids`; special tokens (pad, </s>, unk, ...) left out when asked.
  absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  // "▁" becomes a space; the first decoded token drops its leading one.
  absl::StatusOr<std::string> TokenBytes(int64_t id, bool skip_special_tokens, bool first) const override;
  bool IsSpecial(int64_t id) const override { return id >= 0 && id < vocab_size() && special_[id]; }
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }

 private:
  UnigramTokenizer() = default;
  std::string Normalize(const std::string& text) const;
  // Appends the ids of one pre-tokenized word ("▁word").
  void EncodeWord(const std::string& word, std::vector<int64_t>* ids) const;
  // SentencePiece's precompiled character map: the longest-prefix lookup the
  // transformers tokenizer does, over a darts-clone double array.
  const char* MapPrefix(const std::string& text, size_t* length) const;

  std::vector<std::string> pieces_;
  std::vector<double> scores_;
  std::unordered_map<std::string, int64_t> piece_ids_;
  size_t longest_piece_ = 0;
  int64_t unk_id_ = 0;
  double unk_score_ = 0;
  std::vector<uint32_t> trie_;        // the character map's double array
  std::string normalized_pool_;       // NUL-separated replacements
  std::vector<std::pair<std::string, int64_t>> added_;  // matched in raw text, before normalising
  std::vector<bool> special_;
  int64_t eos_id_ = -1;
};

}  // namespace blip2::engine
