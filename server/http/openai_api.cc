#include "server/http/openai_api.h"

#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/generation/generation_params.h"

namespace blip2::server {
namespace {

using Json = nlohmann::json;

absl::Status Bad(const std::string& message) { return absl::InvalidArgumentError(message); }

// OpenAI options that change what is generated and that BLIP-2 does not
// offer: refused by name. (Fields that only label a request, such as `user`,
// are accepted and ignored.)
const std::set<std::string>& Unsupported() {
  static const std::set<std::string> fields = {
      "logit_bias", "tools",      "tool_choice", "functions",  "function_call", "parallel_tool_calls",
      "response_format", "audio", "modalities", "prediction", "reasoning_effort", "web_search_options"};
  return fields;
}
const std::set<std::string>& Known() {
  static const std::set<std::string> fields = {
      // OpenAI's.
      "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n",
      "stream", "stream_options", "frequency_penalty", "presence_penalty", "user", "store", "metadata",
      "service_tier", "logprobs", "top_logprobs",
      // Ours (docs/http.md).
      "num_beams", "min_tokens", "repetition_penalty", "no_repeat_ngram_size", "length_penalty", "early_stopping",
      "top_k", "raw_prompt"};
  return fields;
}

absl::StatusOr<int64_t> Int(const Json& v, const std::string& field, int64_t min, int64_t max) {
  if (!v.is_number_integer()) return Bad(field + " must be an integer");
  const int64_t x = v.get<int64_t>();
  if (x < min || x > max) return Bad(absl::StrCat(field, " must be in [", min, ", ", max, "], got ", x));
  return x;
}

absl::StatusOr<double> Number(const Json& v, const std::string& field) {
  if (!v.is_number()) return Bad(field + " must be a number");
  return v.get<double>();
}

// The user message's text parts and its one image.
absl::Status ReadMessages(const Json& messages, ChatRequest* out, std::string* text) {
  if (!messages.is_array() || messages.empty()) return Bad("messages must be a non-empty array");
  if (messages.size() != 1) {
    return Bad(absl::StrCat("messages has ", messages.size(),
                            " entries; BLIP-2 takes one user message (an image and optional text)"));
  }
  const Json& m = messages[0];
  if (!m.is_object()) return Bad("messages[0] must be an object");
  for (const auto& [key, value] : m.items()) {
    if (key != "role" && key != "content" && key != "name") return Bad("messages[0]." + key + " is not supported");
  }
  if (!m.contains("role") || !m["role"].is_string()) return Bad("messages[0].role must be a string");
  if (m["role"] != "user") {
    return Bad("messages[0].role is \"" + m["role"].get<std::string>() + "\"; BLIP-2 takes one \"user\" message");
  }
  if (!m.contains("content")) return Bad("messages[0].content is required");
  const Json& content = m["content"];
  if (content.is_string()) return Bad("messages[0].content has no image: give parts with one {\"type\": \"image_url\"}");
  if (!content.is_array()) return Bad("messages[0].content must be a string or an array of parts");
  std::vector<std::string> texts;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string field = absl::StrCat("messages[0].content[", i, "]");
    const Json& part = content[i];
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return Bad(field + " must be an object with a \"type\"");
    }
    const std::string type = part["type"];
    if (type == "text") {
      if (!part.contains("text") || !part["text"].is_string()) return Bad(field + ".text must be a string");
      const std::string t = part["text"];
      if (!t.empty()) texts.push_back(t);
    } else if (type == "image_url") {
      if (!out->image_url.empty()) return Bad("messages[0].content has more than one image; BLIP-2 takes one");
      if (!part.contains("image_url") || !part["image_url"].is_object() || !part["image_url"].contains("url") ||
          !part["image_url"]["url"].is_string()) {
        return Bad(field + ".image_url.url must be a string");
      }
      out->image_url = part["image_url"]["url"];
      if (out->image_url.empty()) return Bad(field + ".image_url.url is empty");
    } else {
      return Bad(field + ".type \"" + type + "\" is not supported (\"text\" or \"image_url\")");
    }
  }
  if (out->image_url.empty()) return Bad("messages[0].content has no image part ({\"type\": \"image_url\"})");
  *text = absl::StrJoin(texts, " ");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ChatRequest> ParseChatRequest(const std::string& body) {
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad("the body is not valid JSON");
  if (!j.is_object()) return Bad("the body must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (Unsupported().count(key) > 0) {
      if (value.is_null() || (value.is_boolean() && !value.get<bool>())) continue;  // asked for nothing
      return Bad(key + " is not supported by this server");
    }
    if (Known().count(key) == 0) return Bad(key + " is not a known field");
  }
  ChatRequest out;
  if (!j.contains("model") || !j["model"].is_string()) return Bad("model must be a string");
  out.model = j["model"];
  std::string text;
  if (!j.contains("messages")) return Bad("messages is required");
  if (absl::Status s = ReadMessages(j["messages"], &out, &text); !s.ok()) return s;
  bool raw = false;
  if (j.contains("raw_prompt")) {
    if (!j["raw_prompt"].is_boolean()) return Bad("raw_prompt must be true or false");
    raw = j["raw_prompt"];
  }
  out.prompt = raw || text.empty() ? text : engine::QuestionPrompt(text);

  v1::DecodingOptions& o = out.options;
  const auto get_int = [&](const char* name, int64_t min, int64_t max) -> absl::StatusOr<std::optional<int64_t>> {
    if (!j.contains(name) || j[name].is_null()) return std::optional<int64_t>();
    auto v = Int(j[name], name, min, max);
    if (!v.ok()) return v.status();
    return std::optional<int64_t>(*v);
  };
  const auto get_number = [&](const char* name) -> absl::StatusOr<std::optional<double>> {
    if (!j.contains(name) || j[name].is_null()) return std::optional<double>();
    auto v = Number(j[name], name);
    if (!v.ok()) return v.status();
    return std::optional<double>(*v);
  };
  ASSIGN_OR_RETURN(const std::optional<int64_t> max_tokens, get_int("max_tokens", 1, INT32_MAX));
  ASSIGN_OR_RETURN(const std::optional<int64_t> max_completion_tokens, get_int("max_completion_tokens", 1, INT32_MAX));
  if (max_tokens && max_completion_tokens && *max_tokens != *max_completion_tokens) {
    return Bad("max_tokens and max_completion_tokens differ; give one");
  }
  if (max_tokens || max_completion_tokens) o.set_max_new_tokens(static_cast<int32_t>(max_tokens ? *max_tokens : *max_completion_tokens));
  ASSIGN_OR_RETURN(const std::optional<int64_t> min_tokens, get_int("min_tokens", 0, INT32_MAX));
  if (min_tokens) o.set_min_new_tokens(static_cast<int32_t>(*min_tokens));
  ASSIGN_OR_RETURN(const std::optional<int64_t> n, get_int("n", 1, 128));
  if (n) o.set_num_return_sequences(static_cast<int32_t>(*n));
  ASSIGN_OR_RETURN(const std::optional<int64_t> num_beams, get_int("num_beams", 1, 128));
  if (num_beams) o.set_num_beams(static_cast<int32_t>(*num_beams));
  ASSIGN_OR_RETURN(const std::optional<int64_t> top_k, get_int("top_k", 0, INT32_MAX));
  if (top_k) o.set_top_k(static_cast<int32_t>(*top_k));
  ASSIGN_OR_RETURN(const std::optional<int64_t> no_repeat, get_int("no_repeat_ngram_size", 0, INT32_MAX));
  if (no_repeat) o.set_no_repeat_ngram_size(static_cast<int32_t>(*no_repeat));
  if (j.contains("seed") && !j["seed"].is_null()) {
    if (!j["seed"].is_number_integer()) return Bad("seed must be an integer");
    o.set_seed(static_cast<uint64_t>(j["seed"].get<int64_t>()));
  }
  ASSIGN_OR_RETURN(const std::optional<double> temperature, get_number("temperature"));
  ASSIGN_OR_RETURN(const std::optional<double> top_p, get_number("top_p"));
  if (temperature) {
    if (*temperature < 0 || *temperature > 2) return Bad("temperature must be in [0, 2]");
    // 0 is greedy, as OpenAI's clients mean it; above 0 samples.
    o.set_do_sample(*temperature > 0);
    if (*temperature > 0) o.set_temperature(static_cast<float>(*temperature));
  }
  if (top_p) {
    if (*top_p <= 0 || *top_p > 1) return Bad("top_p must be in (0, 1]");
    o.set_top_p(static_cast<float>(*top_p));
    if (!temperature) o.set_do_sample(true);  // nucleus sampling asked for on its own
  }
  if (top_k && !temperature) o.set_do_sample(true);
  ASSIGN_OR_RETURN(const std::optional<double> repetition_penalty, get_number("repetition_penalty"));
  if (repetition_penalty) o.set_repetition_penalty(static_cast<float>(*repetition_penalty));
  ASSIGN_OR_RETURN(const std::optional<double> length_penalty, get_number("length_penalty"));
  if (length_penalty) o.set_length_penalty(static_cast<float>(*length_penalty));
  for (const char* name : {"frequency_penalty", "presence_penalty"}) {
    ASSIGN_OR_RETURN(const std::optional<double> penalty, get_number(name));
    if (penalty && *penalty != 0) return Bad(std::string(name) + " is not supported (use repetition_penalty)");
  }
  if (j.contains("early_stopping") && !j["early_stopping"].is_null()) {
    const Json& e = j["early_stopping"];
    if (e.is_boolean()) {
      o.set_early_stopping(e.get<bool>() ? v1::DecodingOptions::EARLY_STOPPING_TRUE
                                         : v1::DecodingOptions::EARLY_STOPPING_FALSE);
    } else if (e == "never") {
      o.set_early_stopping(v1::DecodingOptions::EARLY_STOPPING_NEVER);
    } else {
      return Bad("early_stopping must be true, false or \"never\"");
    }
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const Json& stop = j["stop"];
    if (stop.is_string()) {
      o.add_stop(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (size_t i = 0; i < stop.size(); ++i) {
        if (!stop[i].is_string()) return Bad(absl::StrCat("stop[", i, "] must be a string"));
        o.add_stop(stop[i].get<std::string>());
      }
    } else {
      return Bad("stop must be a string or an array of strings");
    }
  }
  if (j.contains("logprobs") && !j["logprobs"].is_null()) {
    if (!j["logprobs"].is_boolean()) return Bad("logprobs must be true or false");
    out.logprobs = j["logprobs"];
  }
  ASSIGN_OR_RETURN(const std::optional<int64_t> top_logprobs,
                   get_int("top_logprobs", 0, engine::kMaxTopLogprobs));
  if (top_logprobs && !out.logprobs) return Bad("top_logprobs needs logprobs: true");
  if (out.logprobs) o.set_logprobs(static_cast<int32_t>(top_logprobs.value_or(0)));
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) return Bad("stream must be true or false");
    out.stream = j["stream"];
  }
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    const Json& so = j["stream_options"];
    if (!out.stream) return Bad("stream_options needs stream: true");
    if (!so.is_object()) return Bad("stream_options must be an object");
    for (const auto& [key, value] : so.items()) {
      if (key != "include_usage") return Bad("stream_options." + key + " is not supported");
      if (!value.is_boolean()) return Bad("stream_options.include_usage must be true or false");
      out.include_usage = value;
    }
  }
  return out;
}

absl::StatusOr<std::string> DecodeDataUrl(const std::string& url, const std::string& field) {
  if (!absl::StartsWith(url, "data:")) {
    const size_t colon = url.find(':');
    const std::string scheme = colon == std::string::npos ? url.substr(0, 16) : url.substr(0, colon);
    return Bad(field + ": only data: URLs are accepted (this server fetches no \"" + scheme + "\" URL)");
  }
  const size_t comma = url.find(',');
  if (comma == std::string::npos) return Bad(field + ": a data: URL needs a ',' before its data");
  const std::string meta = url.substr(5, comma - 5);
  if (!absl::EndsWith(meta, ";base64")) return Bad(field + ": the data: URL must be base64 (\";base64,\")");
  std::string bytes;
  if (!absl::Base64Unescape(absl::string_view(url).substr(comma + 1), &bytes)) {
    return Bad(field + ": the data: URL's base64 is not valid");
  }
  if (bytes.empty()) return Bad(field + ": the data: URL holds no bytes");
  return bytes;
}

std::string OpenAiFinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return "stop";
  }
}

namespace {

// One token of OpenAI's logprobs.content (or of its top_logprobs).
Json TokenJson(int64_t id, float logprob, const TokenText& token_text) {
  const std::string text = token_text(id);
  Json bytes = Json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return {{"token", text}, {"logprob", logprob}, {"bytes", bytes}};
}

// {"content": [...], "refusal": null} for a run of tokens.
template <class Logprobs>
Json LogprobsJson(const Logprobs& logprobs, const TokenText& token_text) {
  Json content = Json::array();
  for (const v1::TokenLogprob& lp : logprobs) {
    Json entry = TokenJson(lp.token_id(), lp.logprob(), token_text);
    Json top = Json::array();
    for (const v1::TokenAlternative& alt : lp.top()) top.push_back(TokenJson(alt.token_id(), alt.logprob(), token_text));
    entry["top_logprobs"] = top;
    content.push_back(entry);
  }
  return {{"content", content}, {"refusal", nullptr}};
}

Json UsageJson(const v1::Usage& u) {
  // prompt_tokens: the image's query tokens and the text prompt, as the model saw them.
  const int64_t prompt = u.image_tokens() + u.prompt_tokens();
  return {{"prompt_tokens", prompt}, {"completion_tokens", u.generated_tokens()},
          {"total_tokens", prompt + u.generated_tokens()}};
}
}  // namespace

std::string ChatCompletionJson(const v1::Completion& completion, const std::string& id, const std::string& model,
                               int64_t created, const TokenText& token_text) {
  Json choices = Json::array();
  for (int i = 0; i < completion.sequences_size(); ++i) {
    const v1::Sequence& s = completion.sequences(i);
    choices.push_back({{"index", i},
                       {"message", {{"role", "assistant"}, {"content", s.text()}}},
                       {"logprobs", token_text ? LogprobsJson(s.logprobs(), token_text) : Json(nullptr)},
                       {"finish_reason", OpenAiFinishReason(s.finish_reason())}});
  }
  const Json j = {{"id", id},           {"object", "chat.completion"}, {"created", created}, {"model", model},
                  {"choices", choices}, {"usage", UsageJson(completion.usage())}};
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ChatChunkJson(const std::string& id, const std::string& model, int64_t created, int index, bool first,
                          const std::string& text, const std::string& finish_reason,
                          const std::vector<v1::TokenLogprob>& logprobs, const TokenText& token_text) {
  Json delta = Json::object();
  if (first) delta["role"] = "assistant";
  if (!text.empty() || first) delta["content"] = text;
  Json choice = {{"index", index},
                 {"delta", delta},
                 {"logprobs", token_text ? LogprobsJson(logprobs, token_text) : Json(nullptr)}};
  choice["finish_reason"] = finish_reason.empty() ? Json(nullptr) : Json(finish_reason);
  const Json j = {{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
                  {"model", model}, {"choices", Json::array({choice})}};
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string UsageChunkJson(const std::string& id, const std::string& model, int64_t created, const v1::Usage& usage) {
  const Json j = {{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
                  {"model", model}, {"choices", Json::array()},          {"usage", UsageJson(usage)}};
  return j.dump();
}

absl::StatusOr<EmbeddingsRequest> ParseEmbeddingsRequest(const std::string& body) {
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad("the body is not valid JSON");
  if (!j.is_object()) return Bad("the body must be a JSON object");
  EmbeddingsRequest out;
  for (const auto& [key, value] : j.items()) {
    if (key == "model" || key == "input" || key == "images" || key == "encoding_format" || key == "user") continue;
    if (key == "dimensions" && value.is_null()) continue;
    if (key == "dimensions") return Bad("dimensions is not supported: the embedding size is the model's");
    return Bad(key + " is not a known field");
  }
  if (!j.contains("model") || !j["model"].is_string()) return Bad("model must be a string");
  out.model = j["model"];
  if (j.contains("input") && !j["input"].is_null()) {
    const Json& input = j["input"];
    const Json texts = input.is_string() ? Json::array({input}) : input;
    if (!texts.is_array()) return Bad("input must be a string or an array of strings");
    for (size_t i = 0; i < texts.size(); ++i) {
      if (texts[i].is_number_integer() || texts[i].is_array()) {
        return Bad("input as token ids is not supported; give text");
      }
      if (!texts[i].is_string()) return Bad(absl::StrCat("input[", i, "] must be a string"));
      if (texts[i].get<std::string>().empty()) return Bad(absl::StrCat("input[", i, "] is empty"));
      out.embed.add_texts(texts[i].get<std::string>());
    }
  }
  if (j.contains("images") && !j["images"].is_null()) {
    const Json& images = j["images"];
    if (!images.is_array()) return Bad("images must be an array of data: URLs");
    for (size_t i = 0; i < images.size(); ++i) {
      const std::string field = absl::StrCat("images[", i, "]");
      if (!images[i].is_string()) return Bad(field + " must be a data: URL string");
      ASSIGN_OR_RETURN(std::string bytes, DecodeDataUrl(images[i].get<std::string>(), field));
      out.embed.add_images()->set_data(std::move(bytes));
    }
  }
  if (out.embed.texts().empty() && out.embed.images().empty()) {
    return Bad("input is required (or our extension \"images\")");
  }
  if (j.contains("encoding_format") && !j["encoding_format"].is_null()) {
    const Json& f = j["encoding_format"];
    if (f != "float" && f != "base64") return Bad("encoding_format must be \"float\" or \"base64\"");
    out.base64 = f == "base64";
  }
  return out;
}

namespace {
// An embedding as OpenAI sends it: floats, or their little-endian float32
// bytes in base64.
template <class Values>
Json EmbeddingValues(const Values& values, bool base64) {
  if (!base64) return Json(std::vector<float>(values.begin(), values.end()));
  std::string bytes;
  bytes.reserve(static_cast<size_t>(values.size()) * 4);
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<char>((bits >> (8 * b)) & 0xff));
  }
  return absl::Base64Escape(bytes);
}
}  // namespace

std::string EmbeddingsJson(const v1::EmbedResponse& response, const std::string& model, bool base64) {
  Json data = Json::array();
  int64_t tokens = 0;
  int index = 0;
  for (const v1::TextEmbedding& t : response.texts()) {
    data.push_back({{"object", "embedding"}, {"index", index++}, {"embedding", EmbeddingValues(t.embedding(), base64)}});
    tokens += t.tokens();
  }
  for (const v1::ImageEmbedding& e : response.images()) {
    data.push_back({{"object", "embedding"},
                    {"index", index++},
                    {"embedding", EmbeddingValues(e.embeddings().values(), base64)},
                    {"shape", {e.embeddings().rows(), e.embeddings().cols()}}});
  }
  return Json{{"object", "list"},
              {"data", data},
              {"model", model},
              {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}}
      .dump();
}

std::string ModelsJson(const std::vector<std::string>& models, int64_t created) {
  Json data = Json::array();
  for (const std::string& m : models) {
    data.push_back({{"id", m}, {"object", "model"}, {"created", created}, {"owned_by", "blip2-serve"}});
  }
  return Json{{"object", "list"}, {"data", data}}.dump();
}

int HttpStatusOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(const absl::Status& status) {
  const int http = HttpStatusOf(status);
  const char* type = http == 401   ? "authentication_error"
                     : http == 404 ? "not_found_error"
                     : http == 429 ? "rate_limit_error"
                     : http == 413 ? "invalid_request_error"
                     : http < 500  ? "invalid_request_error"
                                   : "server_error";
  const Json j = {{"error",
                   {{"message", std::string(status.message())},
                    {"type", type},
                    {"param", nullptr},
                    {"code", absl::StatusCodeToString(status.code())}}}};
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace blip2::server
