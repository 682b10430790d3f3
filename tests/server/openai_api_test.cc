// The OpenAI chat request mapping, field by field, and the response and error
// JSON (server/http/openai_api.h), without a server.
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "server/http/openai_api.h"
#include "tests/catch.h"

namespace blip2::server {
namespace {

using Json = nlohmann::json;

Json Request(const Json& extra, const std::string& text = "") {
  Json parts = Json::array({{{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64,AAAA"}}}}});
  if (!text.empty()) parts.push_back({{"type", "text"}, {"text", text}});
  Json j = {{"model", "m"}, {"messages", Json::array({{{"role", "user"}, {"content", parts}}})}};
  for (const auto& [key, value] : extra.items()) j[key] = value;
  return j;
}

absl::StatusOr<ChatRequest> Parse(const Json& extra, const std::string& text = "") {
  return ParseChatRequest(Request(extra, text).dump());
}

void Refused(const Json& extra, const std::string& what) {
  const auto parsed = Parse(extra);
  INFO(extra.dump());
  CHECK(absl::IsInvalidArgument(parsed.status()));
  CHECK_THAT(std::string(parsed.status().message()), Catch::Contains(what));
}

TEST_CASE("openai api: messages map to BLIP-2's prompt") {
  auto caption = Parse({});
  REQUIRE(caption.ok());
  CHECK(caption->prompt.empty());
  CHECK(caption->image_url == "data:image/png;base64,AAAA");
  auto question = Parse({}, "what is this?");
  REQUIRE(question.ok());
  CHECK(question->prompt == "Question: what is this? Answer:");
  auto raw = Parse({{"raw_prompt", true}}, "a photo of");
  REQUIRE(raw.ok());
  CHECK(raw->prompt == "a photo of");
  const auto status_of = [](const Json& body) { return ParseChatRequest(body.dump()).status(); };
  Json two_images = Request({});
  two_images["messages"][0]["content"].push_back(two_images["messages"][0]["content"][0]);
  CHECK_THAT(std::string(status_of(two_images).message()), Catch::Contains("more than one image"));
  Json system = Request({});
  system["messages"][0]["role"] = "system";
  CHECK_THAT(std::string(status_of(system).message()), Catch::Contains("\"system\""));
  Json two_messages = Request({});
  two_messages["messages"].push_back(two_messages["messages"][0]);
  CHECK_THAT(std::string(status_of(two_messages).message()), Catch::Contains("one user message"));
  CHECK_THAT(std::string(ParseChatRequest("{not json").status().message()), Catch::Contains("not valid JSON"));
}

TEST_CASE("openai api: options map to DecodingOptions") {
  auto greedy = Parse({{"temperature", 0}, {"max_tokens", 7}, {"seed", 3}, {"stop", "x"}});
  REQUIRE(greedy.ok());
  CHECK_FALSE(greedy->options.do_sample());
  CHECK(greedy->options.max_new_tokens() == 7);
  CHECK(greedy->options.seed() == 3);
  CHECK(greedy->options.stop_size() == 1);
  auto sampled = Parse({{"temperature", 0.7}, {"n", 3}, {"stop", {"a", "b"}}, {"max_completion_tokens", 5}});
  REQUIRE(sampled.ok());
  CHECK(sampled->options.do_sample());
  CHECK(sampled->options.temperature() == Approx(0.7));
  CHECK(sampled->options.num_return_sequences() == 3);
  CHECK(sampled->options.stop_size() == 2);
  CHECK(sampled->options.max_new_tokens() == 5);
  auto nucleus = Parse({{"top_p", 0.9}});
  REQUIRE(nucleus.ok());
  CHECK(nucleus->options.do_sample());  // top_p alone asks for sampling
  auto unset = Parse({});
  REQUIRE(unset.ok());
  CHECK_FALSE(unset->options.has_do_sample());  // the checkpoint's generation_config decides
  auto ours = Parse({{"num_beams", 4}, {"min_tokens", 2}, {"repetition_penalty", 1.2}, {"no_repeat_ngram_size", 3},
                     {"length_penalty", 0.5}, {"early_stopping", "never"}, {"top_k", 5}});
  REQUIRE(ours.ok());
  CHECK(ours->options.num_beams() == 4);
  CHECK(ours->options.min_new_tokens() == 2);
  CHECK(ours->options.early_stopping() == v1::DecodingOptions::EARLY_STOPPING_NEVER);
  auto streamed = Parse({{"stream", true}, {"stream_options", {{"include_usage", true}}}});
  REQUIRE(streamed.ok());
  CHECK(streamed->stream);
  CHECK(streamed->include_usage);
  auto plain = Parse({{"logprobs", false}, {"user", "u1"}, {"frequency_penalty", 0}});  // nothing asked for
  REQUIRE(plain.ok());
  CHECK_FALSE(plain->logprobs);
  CHECK_FALSE(plain->options.has_logprobs());
  auto chosen = Parse({{"logprobs", true}});
  REQUIRE(chosen.ok());
  CHECK(chosen->logprobs);
  CHECK(chosen->options.logprobs() == 0);  // the chosen token's only
  auto top = Parse({{"logprobs", true}, {"top_logprobs", 3}});
  REQUIRE(top.ok());
  CHECK(top->options.logprobs() == 3);
}

TEST_CASE("openai api: logprobs in responses and chunks, with each token's text and bytes") {
  v1::Completion completion;
  v1::Sequence* s = completion.add_sequences();
  s->set_text("ab");
  for (int id : {7, 9}) {
    v1::TokenLogprob* lp = s->add_logprobs();
    lp->set_token_id(id);
    lp->set_logprob(-0.5f * static_cast<float>(id));
    v1::TokenAlternative* alt = lp->add_top();
    alt->set_token_id(id);
    alt->set_logprob(-0.25f);
  }
  const TokenText text = [](int64_t id) { return id == 7 ? std::string("a") : std::string("\xc3"); };
  const Json j = Json::parse(ChatCompletionJson(completion, "c", "m", 5, text));
  const Json& content = j["choices"][0]["logprobs"]["content"];
  REQUIRE(content.size() == 2);
  CHECK(content[0]["token"] == "a");
  CHECK(content[0]["bytes"] == Json::array({97}));
  CHECK(content[0]["logprob"].get<double>() == Approx(-3.5));
  CHECK(content[0]["top_logprobs"][0]["logprob"].get<double>() == Approx(-0.25));
  CHECK(content[1]["bytes"] == Json::array({0xc3}));  // part of a character: the bytes say which
  CHECK(j["choices"][0]["logprobs"]["refusal"].is_null());
  // Without a token text function (not asked for): null, as OpenAI sends.
  CHECK(Json::parse(ChatCompletionJson(completion, "c", "m", 5))["choices"][0]["logprobs"].is_null());
  const std::vector<v1::TokenLogprob> pending(s->logprobs().begin(), s->logprobs().end());
  const Json chunk = Json::parse(ChatChunkJson("c", "m", 5, 0, false, "ab", "", pending, text));
  CHECK(chunk["choices"][0]["logprobs"]["content"].size() == 2);
}

TEST_CASE("openai api: embeddings requests and responses") {
  const std::string png = "data:image/png;base64," + absl::Base64Escape("\x89PNG");
  auto texts = ParseEmbeddingsRequest(Json({{"model", "itm"}, {"input", {"a cat", "a dog"}}}).dump());
  REQUIRE(texts.ok());
  CHECK(texts->model == "itm");
  CHECK(texts->embed.texts_size() == 2);
  CHECK_FALSE(texts->base64);
  auto one = ParseEmbeddingsRequest(Json({{"model", "itm"}, {"input", "a cat"}, {"images", {png}},
                                          {"encoding_format", "base64"}}).dump());
  REQUIRE(one.ok());
  CHECK(one->embed.texts_size() == 1);
  REQUIRE(one->embed.images_size() == 1);
  CHECK(one->embed.images(0).data() == "\x89PNG");
  CHECK(one->base64);
  const auto refused = [](const Json& body, const std::string& what) {
    const auto parsed = ParseEmbeddingsRequest(body.dump());
    INFO(body.dump());
    CHECK(absl::IsInvalidArgument(parsed.status()));
    CHECK_THAT(std::string(parsed.status().message()), Catch::Contains(what));
  };
  refused({{"model", "itm"}}, "input is required");
  refused({{"model", "itm"}, {"input", {1, 2}}}, "token ids");
  refused({{"model", "itm"}, {"input", ""}}, "input[0] is empty");
  refused({{"model", "itm"}, {"input", "x"}, {"dimensions", 8}}, "dimensions");
  refused({{"model", "itm"}, {"input", "x"}, {"encoding_format", "int8"}}, "encoding_format");
  refused({{"model", "itm"}, {"images", {"http://x/y.png"}}}, "images[0]");
  refused({{"input", "x"}}, "model must be a string");

  v1::EmbedResponse response;
  v1::TextEmbedding* t = response.add_texts();
  t->add_embedding(0.6f);
  t->add_embedding(-0.8f);
  t->set_tokens(4);
  v1::ImageEmbedding* e = response.add_images();
  e->mutable_embeddings()->set_rows(2);
  e->mutable_embeddings()->set_cols(1);
  e->mutable_embeddings()->add_values(1.0f);
  e->mutable_embeddings()->add_values(-1.0f);
  const Json floats = Json::parse(EmbeddingsJson(response, "itm", false));
  CHECK(floats["object"] == "list");
  CHECK(floats["data"][0]["index"] == 0);
  CHECK(floats["data"][0]["embedding"][1].get<double>() == Approx(-0.8));
  CHECK(floats["data"][1]["index"] == 1);
  CHECK(floats["data"][1]["shape"] == Json::array({2, 1}));
  CHECK(floats["usage"]["prompt_tokens"] == 4);
  const Json packed = Json::parse(EmbeddingsJson(response, "itm", true));
  std::string bytes;
  REQUIRE(absl::Base64Unescape(packed["data"][0]["embedding"].get<std::string>(), &bytes));
  REQUIRE(bytes.size() == 8);
  float second;
  std::memcpy(&second, bytes.data() + 4, 4);  // little-endian float32, as the openai package decodes it
  CHECK(second == -0.8f);
}

TEST_CASE("openai api: what is not supported is refused by name") {
  Refused({{"top_logprobs", 2}}, "top_logprobs needs logprobs: true");
  Refused({{"logprobs", true}, {"top_logprobs", 21}}, "top_logprobs must be in [0, 20]");
  Refused({{"logprobs", 1}}, "logprobs must be true or false");
  Refused({{"tools", Json::array({1})}}, "tools is not supported");
  Refused({{"bogus", 1}}, "bogus is not a known field");
  Refused({{"presence_penalty", 0.5}}, "presence_penalty is not supported");
  Refused({{"temperature", 3}}, "temperature must be in [0, 2]");
  Refused({{"top_p", 0}}, "top_p must be in (0, 1]");
  Refused({{"max_tokens", 0}}, "max_tokens must be in [1,");
  Refused({{"max_tokens", 3}, {"max_completion_tokens", 4}}, "differ");
  Refused({{"n", "two"}}, "n must be an integer");
  Refused({{"stop", 5}}, "stop must be a string");
  Refused({{"stream_options", {{"include_usage", true}}}}, "stream_options needs stream: true");
  Refused({{"early_stopping", "sometimes"}}, "early_stopping");
}

TEST_CASE("openai api: data URLs, responses and errors") {
  auto bytes = DecodeDataUrl("data:image/png;base64," + absl::Base64Escape("\x89PNG"), "url");
  REQUIRE(bytes.ok());
  CHECK(*bytes == "\x89PNG");
  CHECK_THAT(std::string(DecodeDataUrl("https://x/y.jpg", "url").status().message()), Catch::Contains("\"https\""));
  CHECK_THAT(std::string(DecodeDataUrl("data:image/png,raw", "url").status().message()), Catch::Contains("base64"));
  CHECK_THAT(std::string(DecodeDataUrl("data:image/png;base64,!!!", "url").status().message()),
             Catch::Contains("not valid"));

  v1::Completion completion;
  v1::Sequence* s = completion.add_sequences();
  s->set_text("a cat");
  s->set_finish_reason(v1::FINISH_REASON_EOS);
  completion.mutable_usage()->set_image_tokens(32);
  completion.mutable_usage()->set_prompt_tokens(1);
  completion.mutable_usage()->set_generated_tokens(3);
  const Json j = Json::parse(ChatCompletionJson(completion, "chatcmpl-1", "m", 5));
  CHECK(j["object"] == "chat.completion");
  CHECK(j["choices"][0]["message"]["content"] == "a cat");
  CHECK(j["choices"][0]["finish_reason"] == "stop");
  CHECK(j["usage"]["prompt_tokens"] == 33);
  CHECK(j["usage"]["total_tokens"] == 36);
  const Json chunk = Json::parse(ChatChunkJson("c", "m", 5, 0, true, "a", ""));
  CHECK(chunk["choices"][0]["delta"]["role"] == "assistant");
  CHECK(chunk["choices"][0]["finish_reason"].is_null());

  CHECK(HttpStatusOf(absl::InvalidArgumentError("")) == 400);
  CHECK(HttpStatusOf(absl::UnauthenticatedError("")) == 401);
  CHECK(HttpStatusOf(absl::NotFoundError("")) == 404);
  CHECK(HttpStatusOf(absl::ResourceExhaustedError("")) == 429);
  CHECK(HttpStatusOf(absl::UnavailableError("")) == 503);
  CHECK(HttpStatusOf(absl::InternalError("")) == 500);
  const Json error = Json::parse(ErrorJson(absl::ResourceExhaustedError("too many")));
  CHECK(error["error"]["message"] == "too many");
  CHECK(error["error"]["type"] == "rate_limit_error");
}

}  // namespace
}  // namespace blip2::server
