#include "engine/tokenizer/wordpiece_tokenizer.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "engine/tokenizer/unicode.h"

namespace blip2::engine {
namespace {

absl::Status Bad(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

// The CJK ideograph blocks BERT puts spaces around.
bool IsChineseChar(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// BERT's whitespace: tab, newline, carriage return and White_Space.
bool IsBertWhitespace(char32_t c) { return c == '\t' || c == '\n' || c == '\r' || IsWhiteSpace(c); }

// ASCII punctuation (symbols such as $ + < = > ^ ` | ~ included) or \p{P}.
bool IsBertPunctuation(char32_t c) {
  const bool ascii = (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  return ascii || IsPunctuation(c);
}

std::string ToUtf8(const std::u32string& text) {
  std::string out;
  for (char32_t c : text) AppendUtf8(c, &out);
  return out;
}

// The id of the special token at `index` of the post-processor's template.
absl::StatusOr<int64_t> TemplateSpecialId(const nlohmann::json& post, size_t index, const std::string& file) {
  if (post.value("type", "") == "BertProcessing") {
    const nlohmann::json& pair = post[index == 0 ? "cls" : "sep"];
    if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer()) return Bad(file, "bad BertProcessing");
    return pair[1].get<int64_t>();
  }
  if (post.value("type", "") != "TemplateProcessing" || !post.contains("single") || !post["single"].is_array() ||
      post["single"].size() != 3) {
    return Bad(file, "post_processor must be [CLS] $A [SEP] (TemplateProcessing or BertProcessing)");
  }
  const nlohmann::json& piece = post["single"][index];
  if (!piece.contains("SpecialToken")) return Bad(file, "post_processor.single must start and end with special tokens");
  const std::string name = piece["SpecialToken"].value("id", "");
  const nlohmann::json& special = post["special_tokens"];
  if (!special.contains(name) || !special[name].contains("ids") || special[name]["ids"].size() != 1) {
    return Bad(file, absl::StrCat("post_processor.special_tokens has no single id for ", name));
  }
  return special[name]["ids"][0].get<int64_t>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Load(const std::string& model_dir) {
  const std::string path = common::JoinPath(model_dir, "tokenizer.json");
  auto text = common::ReadFile(path);
  if (!text.ok()) return text.status();
  return FromJson(*text, path);
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::FromJson(const std::string& json_text,
                                                                                  const std::string& file) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) return Bad(file, "not a tokenizer.json");
  const nlohmann::json& model = j["model"];
  if (model.value("type", "") != "WordPiece") return Bad(file, "model.type is not \"WordPiece\"");
  if (!model.contains("vocab") || !model["vocab"].is_object()) return Bad(file, "model.vocab must be an object");
  auto tok = std::unique_ptr<WordPieceTokenizer>(new WordPieceTokenizer());
  for (const auto& [piece, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) return Bad(file, "model.vocab ids must be integers");
    tok->vocab_.emplace(piece, id.get<int64_t>());
  }
  tok->prefix_ = model.value("continuing_subword_prefix", "##");
  tok->max_word_chars_ = model.value("max_input_chars_per_word", 100);
  const std::string unk = model.value("unk_token", "[UNK]");
  if (!tok->vocab_.count(unk)) return Bad(file, absl::StrCat("the unknown token ", unk, " is not in the vocabulary"));
  tok->unk_id_ = tok->vocab_.at(unk);
  tok->pad_id_ = tok->vocab_.count("[PAD]") ? tok->vocab_.at("[PAD]") : 0;

  const nlohmann::json norm = j.value("normalizer", nlohmann::json());
  if (!norm.is_object() || norm.value("type", "") != "BertNormalizer") {
    return Bad(file, "normalizer must be a BertNormalizer");
  }
  tok->clean_text_ = norm.value("clean_text", true);
  tok->chinese_chars_ = norm.value("handle_chinese_chars", true);
  tok->lowercase_ = norm.value("lowercase", true);
  tok->strip_accents_ = norm.contains("strip_accents") && norm["strip_accents"].is_boolean()
                            ? norm["strip_accents"].get<bool>()
                            : tok->lowercase_;  // null: follow lowercase, as BERT does
  const nlohmann::json pre = j.value("pre_tokenizer", nlohmann::json());
  if (!pre.is_object() || pre.value("type", "") != "BertPreTokenizer") {
    return Bad(file, "pre_tokenizer must be a BertPreTokenizer");
  }
  const nlohmann::json post = j.value("post_processor", nlohmann::json());
  if (!post.is_object()) return Bad(file, "post_processor is required ([CLS] $A [SEP])");
  auto cls = TemplateSpecialId(post, 0, file);
  if (!cls.ok()) return cls.status();
  auto sep = TemplateSpecialId(post, 2, file);
  if (!sep.ok()) return sep.status();
  tok->cls_id_ = *cls;
  tok->sep_id_ = *sep;
  for (const auto& added : j.value("added_tokens", nlohmann::json::array())) {
    if (!added.contains("content") || !added.contains("id")) return Bad(file, "added_tokens need content and id");
    tok->added_.emplace_back(added["content"].get<std::string>(), added["id"].get<int64_t>());
  }
  std::sort(tok->added_.begin(), tok->added_.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  return tok;
}

std::string WordPieceTokenizer::Normalize(std::string_view text) const {
  std::u32string out;
  for (char32_t c : DecodeUtf8(text)) {
    if (clean_text_) {
      if (c == 0 || c == 0xFFFD || (c != '\t' && c != '\n' && c != '\r' && IsCategoryOther(c))) continue;
      if (IsBertWhitespace(c)) c = ' ';
    }
    if (chinese_chars_ && IsChineseChar(c)) {
      out += U' ';
      out += c;
      out += U' ';
      continue;
    }
    out += c;
  }
  if (strip_accents_) {
    std::u32string decomposed;
    for (char32_t c : out) AppendNfd(c, &decomposed);
    out.clear();
    for (char32_t c : decomposed) {
      if (!IsNonspacingMark(c)) out += c;
    }
  }
  if (lowercase_) {
    std::u32string lower;
    for (char32_t c : out) AppendLowercase(c, &lower);
    out.swap(lower);
  }
  return ToUtf8(out);
}

void WordPieceTokenizer::EncodeWord(const std::u32string& word, std::vector<int64_t>* ids) const {
  if (static_cast<int64_t>(word.size()) > max_word_chars_) {
    ids->push_back(unk_id_);
    return;
  }
  std::vector<int64_t> pieces;
  for (size_t start = 0; start < word.size();) {
    size_t end = word.size();
    int64_t found = -1;
    for (; end > start; --end) {
      std::string piece = ToUtf8(word.substr(start, end - start));
      if (start > 0) piece = prefix_ + piece;
      auto it = vocab_.find(piece);
      if (it != vocab_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {  // no cover: the whole word is unknown
      ids->push_back(unk_id_);
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  ids->insert(ids->end(), pieces.begin(), pieces.end());
}

void WordPieceTokenizer::EncodeOrdinary(std::string_view text, std::vector<int64_t>* ids, size_t stop_after) const {
  std::u32string word;
  const auto flush = [&] {
    if (!word.empty() && ids->size() <= stop_after) EncodeWord(word, ids);
    word.clear();
  };
  for (char32_t c : DecodeUtf8(Normalize(text))) {
    if (IsBertWhitespace(c)) {
      flush();
    } else if (IsBertPunctuation(c)) {
      flush();
      EncodeWord(std::u32string(1, c), ids);
    } else {
      word += c;
    }
  }
  flush();
}

WordPieceTokenizer::Encoding WordPieceTokenizer::Encode(std::string_view text, int64_t max_length) const {
  std::vector<int64_t> pieces;
  size_t plain = 0;  // start of the text since the last added token
  // Pieces past the room are cut anyway: stop encoding once one is found, so
  // a long text costs what its first max_length pieces cost (a 300 KB text of
  // 100-letter words took over 10 s under tokenizer_fuzz).
  const size_t room = static_cast<size_t>(std::max<int64_t>(0, max_length - 2));
  for (size_t i = 0; i < text.size() && pieces.size() <= room;) {
    const auto match = std::find_if(added_.begin(), added_.end(), [&](const auto& a) {
      return !a.first.empty() && text.compare(i, a.first.size(), a.first) == 0;
    });
    if (match == added_.end()) {
      ++i;
      continue;
    }
    EncodeOrdinary(text.substr(plain, i - plain), &pieces, room);
    pieces.push_back(match->second);
    i += match->first.size();
    plain = i;
  }
  if (pieces.size() <= room) EncodeOrdinary(text.substr(plain), &pieces, room);
  Encoding out;
  if (pieces.size() > room) {
    pieces.resize(room);
    out.truncated = true;
  }
  out.ids.push_back(cls_id_);
  out.ids.insert(out.ids.end(), pieces.begin(), pieces.end());
  out.ids.push_back(sep_id_);
  return out;
}

}  // namespace blip2::engine
