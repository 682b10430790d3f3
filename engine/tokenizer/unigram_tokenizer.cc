#include "engine/tokenizer/unigram_tokenizer.h"

#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "engine/tokenizer/unicode.h"

namespace blip2::engine {
namespace {

constexpr char kSpace[] = "\xe2\x96\x81";  // "▁", U+2581
constexpr double kUnkPenalty = 10.0;       // transformers' Unigram: unk scores min_score - 10

size_t Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xe) return 3;
  if ((lead >> 3) == 0x1e) return 4;
  return 1;
}

absl::Status Bad(const std::string& file, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", problem));
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnigramTokenizer>> UnigramTokenizer::Load(const std::string& model_dir) {
  const std::string path = common::JoinPath(model_dir, "tokenizer.json");
  auto text = common::ReadFile(path);
  if (text.ok()) return FromJson(*text, path);
  // The released checkpoints ship both files; we read the SentencePiece model
  // from tokenizer.json (see docs/generation.md), so say what to do when only
  // spiece.model (or neither) is there.
  const std::string spiece = common::JoinPath(model_dir, "spiece.model");
  if (common::ReadFile(spiece).ok()) {
    return absl::NotFoundError(absl::StrCat(
        path, ": not found; this folder has only spiece.model. Write tokenizer.json next to it with "
        "transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)"));
  }
  return absl::NotFoundError(absl::StrCat(model_dir, ": no tokenizer: a Flan-T5 checkpoint needs spiece.model "
                                          "and its tokenizer.json (neither is there)"));
}

absl::StatusOr<std::unique_ptr<UnigramTokenizer>> UnigramTokenizer::FromJson(const std::string& json_text,
                                                                            const std::string& file) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) return Bad(file, "not a tokenizer.json");
  const nlohmann::json& model = j["model"];
  if (model.value("type", "") != "Unigram") return Bad(file, "model.type is not \"Unigram\"");
  if (model.value("byte_fallback", false)) return Bad(file, "byte_fallback is not supported");
  auto tok = std::unique_ptr<UnigramTokenizer>(new UnigramTokenizer());
  if (!model.contains("vocab") || !model["vocab"].is_array()) return Bad(file, "model.vocab must be an array");
  double min_score = std::numeric_limits<double>::max();
  for (const auto& entry : model["vocab"]) {
    if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() || !entry[1].is_number()) {
      return Bad(file, "model.vocab entries must be [piece, score]");
    }
    tok->piece_ids_.emplace(entry[0].get<std::string>(), static_cast<int64_t>(tok->pieces_.size()));
    tok->pieces_.push_back(entry[0].get<std::string>());
    tok->scores_.push_back(entry[1].get<double>());
    tok->longest_piece_ = std::max(tok->longest_piece_, tok->pieces_.back().size());
    min_score = std::min(min_score, tok->scores_.back());
  }
  if (tok->pieces_.empty()) return Bad(file, "model.vocab is empty");
  tok->unk_id_ = model.value("unk_id", 0);
  if (tok->unk_id_ < 0 || tok->unk_id_ >= tok->vocab_size()) return Bad(file, "model.unk_id is out of range");
  tok->unk_score_ = min_score - kUnkPenalty;
  tok->special_.assign(tok->pieces_.size(), false);
  for (const auto& added : j.value("added_tokens", nlohmann::json::array())) {
    const int64_t id = added.value("id", -1);
    const std::string content = added.value("content", "");
    if (id < 0 || content.empty()) return Bad(file, "added_tokens entries need an id and content");
    if (id >= tok->vocab_size()) {  // e.g. <image>, past the unigram vocabulary
      tok->pieces_.resize(id + 1);
      tok->scores_.resize(id + 1, 0);
      tok->special_.resize(id + 1, false);
    }
    tok->pieces_[id] = content;
    tok->special_[id] = added.value("special", false);
    tok->added_.emplace_back(content, id);
    if (content == "</s>") tok->eos_id_ = id;
  }
  // The precompiled normaliser: a little-endian uint32 trie size, the trie,
  // then the replacement strings.
  const nlohmann::json& normalizer = j.value("normalizer", nlohmann::json());
  if (normalizer.is_object() && normalizer.value("type", "") == "Precompiled") {
    std::string blob;
    if (!absl::Base64Unescape(normalizer.value("precompiled_charsmap", ""), &blob) || blob.size() < 4) {
      return Bad(file, "normalizer.precompiled_charsmap is not valid base64");
    }
    uint32_t trie_bytes = 0;
    std::memcpy(&trie_bytes, blob.data(), 4);
    if (trie_bytes % 4 != 0 || 4 + static_cast<size_t>(trie_bytes) > blob.size()) {
      return Bad(file, "normalizer.precompiled_charsmap is truncated");
    }
    tok->trie_.resize(trie_bytes / 4);
    std::memcpy(tok->trie_.data(), blob.data() + 4, trie_bytes);
    tok->normalized_pool_ = blob.substr(4 + trie_bytes);
  } else if (!normalizer.is_null()) {
    return Bad(file, "only the Precompiled normalizer is supported");
  }
  return tok;
}

const char* UnigramTokenizer::MapPrefix(const std::string& text, size_t* length) const {
  // darts-clone's common prefix search; transformers takes the first (shortest) match.
  if (trie_.empty()) return nullptr;
  const auto has_leaf = [](uint32_t u) { return ((u >> 8) & 1) != 0; };
  const auto value = [](uint32_t u) { return u & ((1u << 31) - 1); };
  const auto label = [](uint32_t u) { return u & ((1u << 31) | 0xFF); };
  const auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
  size_t node = offset(trie_[0]);
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    node ^= c;
    if (node >= trie_.size()) return nullptr;
    const uint32_t unit = trie_[node];
    if (label(unit) != c) return nullptr;
    node ^= offset(unit);
    if (node >= trie_.size()) return nullptr;
    if (has_leaf(unit)) {  // the value sits in the unit the offset leads to
      const uint32_t at = value(trie_[node]);
      if (at >= normalized_pool_.size()) return nullptr;
      *length = i + 1;
      return normalized_pool_.c_str() + at;
    }
  }
  return nullptr;
}

std::string UnigramTokenizer::Normalize(const std::string& text) const {
  // Character by character (transformers looks up grapheme clusters first;
  // for text in composed form a cluster is one character).
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const size_t n = std::min(Utf8Length(static_cast<unsigned char>(text[i])), text.size() - i);
    const std::string chunk = text.substr(i, n);
    size_t matched = 0;
    const char* replacement = MapPrefix(chunk, &matched);
    out += replacement ? std::string(replacement) : chunk;
    i += n;
  }
  return out;
}

void UnigramTokenizer::EncodeWord(const std::string& word, std::vector<int64_t>* ids) const {
  // Viterbi: best[i] is the best segmentation of word[0, i).
  struct Node {
    int64_t id = -1;
    size_t start = 0;
    double score = 0;
    bool set = false;
  };
  std::vector<Node> best(word.size() + 1);
  best[0].set = true;
  for (size_t start = 0; start < word.size();) {
    const size_t char_len = std::min(Utf8Length(static_cast<unsigned char>(word[start])), word.size() - start);
    if (!best[start].set) {
      start += char_len;
      continue;
    }
    bool single_char_piece = false;
    for (size_t len = 1; len <= longest_piece_ && start + len <= word.size(); ++len) {
      auto it = piece_ids_.find(word.substr(start, len));
      if (it == piece_ids_.end()) continue;
      const double score = best[start].score + scores_[it->second];
      Node& target = best[start + len];
      if (!target.set || score > target.score) target = {it->second, start, score, true};
      if (len == char_len) single_char_piece = true;
    }
    if (!single_char_piece) {
      const double score = best[start].score + unk_score_;
      Node& target = best[start + char_len];
      if (!target.set || score > target.score) target = {unk_id_, start, score, true};
    }
    start += char_len;
  }
  std::vector<int64_t> reversed;
  for (size_t end = word.size(); end > 0; end = best[end].start) reversed.push_back(best[end].id);
  // Consecutive unknown pieces become one <unk>.
  for (auto it = reversed.rbegin(); it != reversed.rend(); ++it) {
    if (*it == unk_id_ && !ids->empty() && ids->back() == unk_id_) continue;
    ids->push_back(*it);
  }
}

absl::StatusOr<std::vector<int64_t>> UnigramTokenizer::Encode(std::string_view text_view) const {
  const std::string text(text_view);
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<int64_t> ids;
  // Added tokens are matched in the raw text; the pieces between go through
  // normalisation, whitespace split and "▁" prefixes.
  const auto encode_plain = [&](const std::string& segment) {
    const std::string normalized = Normalize(segment);
    const std::vector<char32_t> chars = DecodeUtf8(normalized);
    std::string word;
    const auto flush = [&] {
      if (word.empty()) return;
      // Metaspace: every word starts with "▁"; a "▁" inside a word starts another.
      std::string current = kSpace;
      size_t i = 0;
      if (word.compare(0, 3, kSpace) == 0) i = 3;
      for (; i < word.size(); ++i) {
        if (word.compare(i, 3, kSpace) == 0 && current != kSpace) {
          EncodeWord(current, &ids);
          current = kSpace;
          i += 2;
          continue;
        }
        current += word[i];
      }
      EncodeWord(current, &ids);
      word.clear();
    };
    for (char32_t c : chars) {
      if (IsWhiteSpace(c)) {
        flush();
      } else {
        AppendUtf8(c, &word);
      }
    }
    flush();
  };
  size_t at = 0;
  while (at <= text.size()) {
    size_t next = std::string::npos;
    const std::pair<std::string, int64_t>* found = nullptr;
    for (const auto& added : added_) {
      const size_t pos = text.find(added.first, at);
      if (pos != std::string::npos && (pos < next || (pos == next && added.first.size() > found->first.size()))) {
        next = pos;
        found = &added;
      }
    }
    encode_plain(text.substr(at, (found ? next : text.size()) - at));
    if (!found) break;
    ids.push_back(found->second);
    at = next + found->first.size();
  }
  if (eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

absl::StatusOr<std::string> UnigramTokenizer::TokenBytes(int64_t id, bool skip_special_tokens, bool first) const {
  if (id < 0 || id >= vocab_size()) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is out of range"));
  if (skip_special_tokens && special_[id]) return std::string();
  std::string piece = pieces_[id];
  for (size_t p = piece.find(kSpace); p != std::string::npos; p = piece.find(kSpace, p + 1)) piece.replace(p, 3, " ");
  if (first && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);  // the prefix of the first word
  return piece;
}

absl::StatusOr<std::string> UnigramTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string out;
  bool first = true;
  for (int64_t id : ids) {
    auto bytes = TokenBytes(id, skip_special_tokens, first);
    if (!bytes.ok()) return bytes.status();
    out += *bytes;
    if (!(skip_special_tokens && special_[id])) first = false;
  }
  return out;
}

}  // namespace blip2::engine
