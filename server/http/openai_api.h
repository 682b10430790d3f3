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
};

// INVALID_ARGUMENT naming the field for anything malformed, unknown or not
// supported (never silently ignored).
absl::StatusOr<ChatRequest> ParseChatRequest(const std::string& body);

// The bytes of a `data:[<type>][;base64],<data>` URL. INVALID_ARGUMENT for
// other schemes (http(s) URLs are not fetched) and for bad base64.
absl::StatusOr<std::string> DecodeDataUrl(const std::string& url, const std::string& field);

// OpenAI's finish_reason: "stop" (end of sequence, stop string), "length".
std::string OpenAiFinishReason(v1::FinishReason reason);

// The non-streaming response: one choice per sequence.
std::string ChatCompletionJson(const v1::Completion& completion, const std::string& id, const std::string& model,
                               int64_t created);
// One streamed chunk for choice `index`: the role on the first, text deltas,
// and the finish_reason on the last ("" for none).
std::string ChatChunkJson(const std::string& id, const std::string& model, int64_t created, int index,
                          bool first, const std::string& text, const std::string& finish_reason);
// The last chunk with stream_options.include_usage: no choices, the usage.
std::string UsageChunkJson(const std::string& id, const std::string& model, int64_t created,
                           const v1::Usage& usage);
// GET /v1/models.
std::string ModelsJson(const std::vector<std::string>& models, int64_t created);

// {"error": {"message", "type", "param", "code"}} and its HTTP status
// (400, 401, 404, 413, 429, 500, 503, 504).
int HttpStatusOf(const absl::Status& status);
std::string ErrorJson(const absl::Status& status);

}  // namespace blip2::server
