#include "engine/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <climits>
#include <functional>
#include <queue>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "engine/tokenizer/unicode.h"

namespace blip2::engine {
namespace {

using nlohmann::json;

// The GPT-2 pattern as tokenizers spells it in a Split pre-tokenizer.
constexpr char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::Status Invalid(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

bool IsOther(char32_t c) { return !IsWhiteSpace(c) && !IsLetter(c) && !IsNumber(c); }

}  // namespace

std::vector<std::string> SplitGpt2(std::string_view text) {
  const std::vector<char32_t> cps = DecodeUtf8(text);
  std::vector<std::string> pieces;
  const size_t n = cps.size();
  auto emit = [&](size_t from, size_t to) {
    std::string s;
    for (size_t k = from; k < to; ++k) AppendUtf8(cps[k], &s);
    pieces.push_back(std::move(s));
  };
  auto run = [&](size_t from, bool (*cls)(char32_t)) {
    size_t k = from;
    while (k < n && cls(cps[k])) ++k;
    return k;
  };
  size_t i = 0;
  while (i < n) {
    // Contractions: 's 't 're 've 'm 'll 'd (case-sensitive, as in GPT-2).
    if (cps[i] == U'\'' && i + 1 < n) {
      const char32_t a = cps[i + 1];
      const char32_t b = i + 2 < n ? cps[i + 2] : 0;
      size_t len = 0;
      if (a == U's' || a == U't' || a == U'm' || a == U'd') len = 2;
      else if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) len = 3;
      if (len > 0) {
        emit(i, i + len);
        i += len;
        continue;
      }
    }
    // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+", tried in that order: an
    // optional single space, then a run of one class.
    bool matched = false;
    for (bool (*cls)(char32_t) : {IsLetter, IsNumber, IsOther}) {
      size_t body = i;
      if (cps[i] == U' ' && i + 1 < n && cls(cps[i + 1])) {
        body = i + 1;
      } else if (!cls(cps[i])) {
        continue;
      }
      const size_t end = run(body, cls);
      emit(i, end);
      i = end;
      matched = true;
      break;
    }
    if (matched) continue;
    // "\s+(?!\S)" then "\s+": a whitespace run; when non-space follows, its last
    // character is left to start the next piece (unless the run is one long).
    const size_t end = run(i, IsWhiteSpace);
    if (end < n && end - i > 1) {
      emit(i, end - 1);
      i = end - 1;
    } else {
      emit(i, std::max(end, i + 1));
      i = std::max(end, i + 1);
    }
  }
  return pieces;
}

void BpeTokenizer::BuildByteMaps() {
  // GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest
  // map to U+0100 upwards in byte order.
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t c = printable ? char32_t(b) : char32_t(256 + next++);
    byte_to_char_[b].clear();
    AppendUtf8(c, &byte_to_char_[b]);
    char_to_byte_[c] = static_cast<uint8_t>(b);
  }
}

absl::Status BpeTokenizer::ParseModel(const json& model, const std::string& file) {
  if (!model.is_object()) return Invalid(file, "model is missing");
  const std::string type = model.value("type", "");
  if (type != "BPE") {
    return Invalid(file, absl::StrCat("model.type \"", type, "\" is not supported (only BPE)"));
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) return Invalid(file, "model.vocab is missing");
  if (!model.contains("merges") || !model["merges"].is_array()) return Invalid(file, "model.merges is missing");
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) return Invalid(file, "model.vocab." + token + " is not an id");
    vocab_[token] = id.get<int64_t>();
  }
  int rank = 0;
  for (const auto& m : model["merges"]) {
    std::string left, right;
    if (m.is_string()) {  // "left right"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) return Invalid(file, "model.merges entry \"" + s + "\" is not a pair");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return Invalid(file, "model.merges entry " + m.dump() + " is not a pair");
    }
    merge_rank_.emplace(left + " " + right, rank++);
  }
  for (const char* unsupported : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(unsupported) && !model[unsupported].is_null()) {
      return Invalid(file, absl::StrCat("model.", unsupported, " is not supported"));
    }
  }
  if (model.value("byte_fallback", false)) return Invalid(file, "model.byte_fallback is not supported");
  ignore_merges_ = model.value("ignore_merges", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = vocab_.find(model["unk_token"].get<std::string>());
    if (it != vocab_.end()) unk_id_ = it->second;
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::ParsePreTokenizer(const json& pre, const std::string& file) {
  if (pre.is_null()) {
    split_gpt2_pattern_ = false;
    return absl::OkStatus();
  }
  const std::string type = pre.value("type", "");
  if (type == "Sequence") {
    split_gpt2_pattern_ = false;
    for (const auto& p : pre.value("pretokenizers", json::array())) {
      const bool before = split_gpt2_pattern_;
      RETURN_IF_ERROR(ParsePreTokenizer(p, file));
      split_gpt2_pattern_ = split_gpt2_pattern_ || before;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    add_prefix_space_ = pre.value("add_prefix_space", false);
    split_gpt2_pattern_ = pre.value("use_regex", true);
    return absl::OkStatus();
  }
  if (type == "Split") {
    const json& pattern = pre.value("pattern", json::object());
    const std::string regex = pattern.value("Regex", "");
    if (regex != kGpt2Pattern || pre.value("behavior", "") != "Isolated" || pre.value("invert", false)) {
      return Invalid(file, "pre_tokenizer Split with pattern " + pattern.dump() +
                               " is not supported (only the GPT-2 pattern, Isolated)");
    }
    split_gpt2_pattern_ = true;
    return absl::OkStatus();
  }
  return Invalid(file, "pre_tokenizer type \"" + type + "\" is not supported");
}

absl::Status BpeTokenizer::ParsePostProcessor(const json& post, const std::string& file) {
  if (post.is_null()) return absl::OkStatus();
  const std::string type = post.value("type", "");
  if (type == "Sequence") {
    for (const auto& p : post.value("processors", json::array())) RETURN_IF_ERROR(ParsePostProcessor(p, file));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only; ids unchanged
  if (type == "RobertaProcessing") {
    // "<cls> $A <sep>"; the fields are [token, id] pairs.
    const json cls = post.value("cls", json::array());
    const json sep = post.value("sep", json::array());
    if (cls.size() != 2 || sep.size() != 2) return Invalid(file, "post_processor RobertaProcessing needs cls and sep");
    template_single_ = {{false, {cls[1].get<int64_t>()}}, {true, {}}, {false, {sep[1].get<int64_t>()}}};
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    template_single_.clear();
    const json specials = post.value("special_tokens", json::object());
    for (const auto& piece : post.value("single", json::array())) {
      if (piece.contains("Sequence")) {
        template_single_.push_back({true, {}});
      } else if (piece.contains("SpecialToken")) {
        const std::string name = piece["SpecialToken"].value("id", "");
        if (!specials.contains(name)) return Invalid(file, "post_processor names unknown special token \"" + name + "\"");
        template_single_.push_back({false, specials[name].value("ids", std::vector<int64_t>{})});
      } else {
        return Invalid(file, "post_processor piece " + piece.dump() + " is not understood");
      }
    }
    return absl::OkStatus();
  }
  return Invalid(file, "post_processor type \"" + type + "\" is not supported");
}

absl::Status BpeTokenizer::ParseAddedTokens(const json& added, const std::string& file) {
  for (const auto& t : added) {
    if (!t.is_object() || !t.contains("id") || !t.contains("content")) {
      return Invalid(file, "added_tokens entry " + t.dump() + " lacks id or content");
    }
    AddedToken a;
    a.id = t["id"].get<int64_t>();
    a.content = t["content"].get<std::string>();
    a.special = t.value("special", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    if (a.id < 0 || a.content.empty()) return Invalid(file, "added_tokens entry " + t.dump() + " is invalid");
    added_.push_back(a);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromTokenizerJson(const std::string& json_text,
                                                                             const std::string& file) {
  json j = json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Invalid(file, "not a JSON object");
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  tok->BuildByteMaps();
  RETURN_IF_ERROR(tok->ParseModel(j.value("model", json()), file));
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    return Invalid(file, "normalizer " + j["normalizer"].value("type", std::string("?")) + " is not supported");
  }
  RETURN_IF_ERROR(tok->ParsePreTokenizer(j.value("pre_tokenizer", json()), file));
  RETURN_IF_ERROR(tok->ParsePostProcessor(j.value("post_processor", json()), file));
  RETURN_IF_ERROR(tok->ParseAddedTokens(j.value("added_tokens", json::array()), file));
  const json& decoder = j.value("decoder", json());
  if (!decoder.is_null() && decoder.value("type", "") != "ByteLevel") {
    return Invalid(file, "decoder type \"" + decoder.value("type", std::string("?")) + "\" is not supported");
  }
  // Id tables over the model vocabulary and the added tokens.
  int64_t size = 0;
  for (const auto& [t, id] : tok->vocab_) size = std::max(size, id + 1);
  for (const auto& a : tok->added_) size = std::max(size, a.id + 1);
  tok->id_to_token_.assign(size, "");
  tok->is_added_.assign(size, 0);
  tok->is_special_.assign(size, 0);
  for (const auto& [t, id] : tok->vocab_) tok->id_to_token_[id] = t;
  for (const auto& a : tok->added_) {
    tok->id_to_token_[a.id] = a.content;
    tok->is_added_[a.id] = 1;
    tok->is_special_[a.id] = a.special;
  }
  std::stable_sort(tok->added_.begin(), tok->added_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  return tok;
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Load(const std::string& model_dir) {
  const std::string json_path = common::JoinPath(model_dir, "tokenizer.json");
  std::unique_ptr<BpeTokenizer> tok;
  if (common::FileExists(json_path)) {
    ASSIGN_OR_RETURN(std::string text, common::ReadFile(json_path));
    ASSIGN_OR_RETURN(tok, FromTokenizerJson(text, json_path));
  } else {
    // Slow-tokenizer files: build the equivalent tokenizer.json (GPT-2 style).
    const std::string vocab_path = common::JoinPath(model_dir, "vocab.json");
    const std::string merges_path = common::JoinPath(model_dir, "merges.txt");
    ASSIGN_OR_RETURN(std::string vocab_text, common::ReadFile(vocab_path));
    ASSIGN_OR_RETURN(std::string merges_text, common::ReadFile(merges_path));
    json vocab = json::parse(vocab_text, nullptr, false);
    if (vocab.is_discarded() || !vocab.is_object()) return Invalid(vocab_path, "not a JSON object");
    json merges = json::array();
    std::istringstream lines(merges_text);
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      merges.push_back(line);
    }
    json config = json::object();
    const std::string config_path = common::JoinPath(model_dir, "tokenizer_config.json");
    if (common::FileExists(config_path)) config = json::parse(*common::ReadFile(config_path), nullptr, false);
    auto token_text = [&](const char* key, const char* fallback) {
      if (!config.is_object() || !config.contains(key)) return std::string(fallback);
      const json& v = config[key];
      return v.is_string() ? v.get<std::string>() : v.value("content", std::string(fallback));
    };
    json added = json::array();
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
      const std::string t = token_text(key, key == std::string("pad_token") ? "<pad>" : "</s>");
      if (vocab.contains(t)) added.push_back({{"id", vocab[t]}, {"content", t}, {"special", true}});
    }
    const std::string added_path = common::JoinPath(model_dir, "added_tokens.json");
    if (common::FileExists(added_path)) {
      json extra = json::parse(*common::ReadFile(added_path), nullptr, false);
      if (extra.is_object()) {
        for (const auto& [t, id] : extra.items()) added.push_back({{"id", id}, {"content", t}, {"special", true}});
      }
    }
    const bool add_bos = config.is_object() && config.value("add_bos_token", false);
    const std::string bos = token_text("bos_token", "</s>");
    json post = nullptr;
    if (add_bos && vocab.contains(bos)) {  // transformers' add_bos_token: "<bos> $A"
      json special = json::object();
      special[bos] = {{"id", bos}, {"ids", json::array({vocab[bos]})}, {"tokens", json::array({bos})}};
      json single = json::array();
      single.push_back({{"SpecialToken", {{"id", bos}, {"type_id", 0}}}});
      single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
      post = {{"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", special}};
    }
    json built = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
                  {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", config.value("add_prefix_space", false)}}},
                  {"post_processor", post},
                  {"decoder", {{"type", "ByteLevel"}}},
                  {"added_tokens", added}};
    ASSIGN_OR_RETURN(tok, FromTokenizerJson(built.dump(), vocab_path));
  }
  // transformers' decode option (default false in transformers 5).
  const std::string config_path = common::JoinPath(model_dir, "tokenizer_config.json");
  if (common::FileExists(config_path)) {
    json config = json::parse(*common::ReadFile(config_path), nullptr, false);
    if (config.is_object()) tok->clean_up_spaces_ = config.value("clean_up_tokenization_spaces", false);
  }
  return tok;
}

void BpeTokenizer::EncodeWord(const std::string& mapped, std::vector<int64_t>* ids) const {
  if (ignore_merges_) {
    if (auto it = vocab_.find(mapped); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Symbols start as single characters; merge the best-ranked adjacent pair
  // (the leftmost among equals) until none applies. The pairs wait in a heap
  // and symbols in a linked list, so a long word costs O(n log n), not the
  // O(n^2) of rescanning it per merge (a 100 KB word without spaces would
  // hold a thread for minutes).
  struct Symbol {
    std::string text;
    int prev, next;    // neighbours in the list; -1 at the ends
    int version = 0;   // bumped when the symbol grows or dies
  };
  std::vector<Symbol> list;
  for (size_t i = 0; i < mapped.size();) {
    size_t len = 1;
    const auto c = static_cast<uint8_t>(mapped[i]);
    if (c >= 0xF0) len = 4;
    else if (c >= 0xE0) len = 3;
    else if (c >= 0xC0) len = 2;
    const int index = static_cast<int>(list.size());
    list.push_back(Symbol{mapped.substr(i, len), index - 1, -1});
    if (index > 0) list[index - 1].next = index;
    i += len;
  }
  struct Pair {
    int rank, left, right, left_version, right_version;
    bool operator>(const Pair& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Pair, std::vector<Pair>, std::greater<Pair>> pairs;
  auto consider = [&](int left) {
    const int right = left < 0 ? -1 : list[left].next;
    if (right < 0) return;
    auto it = merge_rank_.find(list[left].text + " " + list[right].text);
    if (it != merge_rank_.end()) pairs.push({it->second, left, right, list[left].version, list[right].version});
  };
  for (int i = 0; i + 1 < static_cast<int>(list.size()); ++i) consider(i);
  while (!pairs.empty()) {
    const Pair p = pairs.top();
    pairs.pop();
    Symbol& left = list[p.left];
    Symbol& right = list[p.right];
    // Stale: either side has merged since, or they are no longer neighbours.
    if (left.version != p.left_version || right.version != p.right_version || left.next != p.right) continue;
    left.text += right.text;
    ++left.version;
    ++right.version;  // dead
    left.next = right.next;
    if (right.next >= 0) list[right.next].prev = p.left;
    consider(left.prev);
    consider(p.left);
  }
  std::vector<std::string> symbols;
  for (int i = list.empty() ? -1 : 0; i >= 0; i = list[i].next) symbols.push_back(std::move(list[i].text));
  for (const std::string& s : symbols) {
    auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      ids->push_back(it->second);
    } else if (unk_id_ >= 0) {
      ids->push_back(unk_id_);
    }
  }
}

void BpeTokenizer::EncodeOrdinary(std::string_view text, std::vector<int64_t>* ids) const {
  if (text.empty()) return;
  std::string input(text);
  if (add_prefix_space_ && input[0] != ' ') input.insert(input.begin(), ' ');
  const std::vector<std::string> words = split_gpt2_pattern_ ? SplitGpt2(input) : std::vector<std::string>{input};
  for (const std::string& word : words) {
    std::string mapped;
    for (unsigned char b : word) mapped += byte_to_char_[b];
    EncodeWord(mapped, ids);
  }
}

absl::StatusOr<std::vector<int64_t>> BpeTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<int64_t> ids;
  // Added tokens are found first, leftmost (then longest) match wins.
  size_t pos = 0;
  size_t segment_start = 0;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (const AddedToken& a : added_) {
      if (text.compare(pos, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t before_end = pos;
    if (hit->lstrip) {
      while (before_end > segment_start && IsWhiteSpace(static_cast<unsigned char>(text[before_end - 1]))) --before_end;
    }
    EncodeOrdinary(text.substr(segment_start, before_end - segment_start), &ids);
    ids.push_back(hit->id);
    pos += hit->content.size();
    if (hit->rstrip) {
      while (pos < text.size() && IsWhiteSpace(static_cast<unsigned char>(text[pos]))) ++pos;
    }
    segment_start = pos;
  }
  EncodeOrdinary(text.substr(segment_start), &ids);
  if (!add_special_tokens || template_single_.empty()) return ids;
  std::vector<int64_t> out;
  for (const TemplatePiece& piece : template_single_) {
    if (piece.is_sequence) {
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      out.insert(out.end(), piece.special_ids.begin(), piece.special_ids.end());
    }
  }
  return out;
}

absl::StatusOr<std::string> BpeTokenizer::TokenBytes(int64_t id, bool skip_special_tokens) const {
  if (id < 0 || id >= vocab_size() || id_to_token_[id].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary (size ", vocab_size(), ")"));
  }
  if (skip_special_tokens && is_special_[id]) return std::string();
  const std::string& token = id_to_token_[id];
  // Byte-level decoding maps each character back to its byte; a token with a
  // character outside the map (an added token's text) is taken as it is.
  std::string bytes;
  for (char32_t c : DecodeUtf8(token)) {
    auto it = char_to_byte_.find(c);
    if (it == char_to_byte_.end()) return token;
    bytes.push_back(static_cast<char>(it->second));
  }
  return bytes;
}

absl::StatusOr<std::string> BpeTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int64_t id : ids) {
    ASSIGN_OR_RETURN(std::string b, TokenBytes(id, skip_special_tokens));
    bytes += b;
  }
  std::string text = Utf8Lossy(bytes);
  if (clean_up_spaces_) {
    for (const char* pattern : {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"}) {
      const std::string from(pattern);
      const std::string to = from == " ' " ? "'" : from.substr(1);
      for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
        text.replace(at, from.size(), to);
      }
    }
  }
  return text;
}

int64_t BpeTokenizer::TokenToId(const std::string& token) const {
  for (const AddedToken& a : added_) {
    if (a.content == token) return a.id;
  }
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

bool BpeTokenizer::IsSpecial(int64_t id) const { return id >= 0 && id < vocab_size() && is_special_[id]; }

}  // namespace blip2::engine
