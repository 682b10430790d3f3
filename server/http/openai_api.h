// The OpenAI chat API in our terms: a /v1/chat/completions body becomes an
// image, a prompt and DecodingOptions; a Completion becomes OpenAI's response
// JSON or stream chunks; a Status becomes OpenAI's error JSON and HTTP status.
// Pure functions (no I/O), so every mapping is unit-tested.
//
// How messages map to BLIP-2 (docs/http.md): exactly one user message with
// exactly one image (content parts {"type":"image_url"}; `data:` URLs) and
// optional text parts (joined by spaces). No text captions the image; text is
// a question, asked in the released checkpoints' prompt "Question: ...
// Answer:"; with the extension "raw_prompt": true the text is the prompt as is.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blip2.pb.h"

namespace blip2::server {

struct ChatRequest {
  std::string model;        // as the client named it; checked against the served one by the caller
  std::string image_url;    // the one image
  std::string prompt;       // what the model continues after the image
  v1::DecodingOptions options;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;       // options.logprobs holds top_logprobs (0 when not given)
};

// The bytes a token id stands for (Engine::TokenText), for OpenAI's
// logprobs "token" and "bytes".
using TokenText = std::function<std::string(int64_t id)>;

// INVALID_ARGUMENT naming the field for anything malformed, unknown or not
// supported (never silently ignored).
absl::StatusOr<ChatRequest> ParseChatRequest(const std::string& body);

// The bytes of a `data:[<type>][;base64],<data>` URL. INVALID_ARGUMENT for
// other schemes (http(s) URLs are not fetched) and for bad base64.
absl::StatusOr<std::string> DecodeDataUrl(const std::string& url, const std::string& field);

// OpenAI's finish_reason: "stop" (end of sequence, stop string), "length".
std::string OpenAiFinishReason(v1::FinishReason reason);

// The non-streaming response: one choice per sequence. With `token_text`
// (the request asked for logprobs), each choice's "logprobs" lists its tokens.
std::string ChatCompletionJson(const v1::Completion& completion, const std::string& id, const std::string& model,
                               int64_t created, const TokenText& token_text = {});
// One streamed chunk for choice `index`: the role on the first, text deltas,
// and the finish_reason on the last ("" for none). With `token_text`, its
// "logprobs" lists `logprobs` (the tokens since the previous chunk).
std::string ChatChunkJson(const std::string& id, const std::string& model, int64_t created, int index,
                          bool first, const std::string& text, const std::string& finish_reason,
                          const std::vector<v1::TokenLogprob>& logprobs = {}, const TokenText& token_text = {});
// The last chunk with stream_options.include_usage: no choices, the usage.
std::string UsageChunkJson(const std::string& id, const std::string& model, int64_t created,
                           const v1::Usage& usage);
// POST /v1/embeddings: "input" (a string or an array of strings) and our
// extension "images" (an array of data: URLs, decoded here), "encoding_format"
// "float" (default) or "base64". Token-id inputs and "dimensions" are refused.
struct EmbeddingsRequest {
  std::string model;
  v1::EmbedRequest embed;  // texts, then images (image data set)
  bool base64 = false;
};
absl::StatusOr<EmbeddingsRequest> ParseEmbeddingsRequest(const std::string& body);
// The response: one entry per text (index 0..T-1, in order), then one per
// image (index T..); an image's "embedding" is its [rows, cols] matrix of
// L2-normalised query-token rows, flattened row-major, with "shape" [rows, cols].
std::string EmbeddingsJson(const v1::EmbedResponse& response, const std::string& model, bool base64);

// GET /v1/models.
std::string ModelsJson(const std::vector<std::string>& models, int64_t created);

// {"error": {"message", "type", "param", "code"}} and its HTTP status
// (400, 401, 404, 413, 429, 500, 503, 504).
int HttpStatusOf(const absl::Status& status);
std::string ErrorJson(const absl::Status& status);

}  // namespace blip2::server
