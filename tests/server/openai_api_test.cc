// The OpenAI chat request mapping, field by field, and the response and error
// JSON (server/http/openai_api.h), without a server.
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
  CHECK(Parse({{"logprobs", false}, {"user", "u1"}, {"frequency_penalty", 0}}).ok());  // nothing asked for
}

TEST_CASE("openai api: what is not supported is refused by name") {
  Refused({{"logprobs", true}}, "logprobs is not supported");
  Refused({{"top_logprobs", 2}}, "top_logprobs is not supported");
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
