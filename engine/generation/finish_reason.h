// Why a generated sequence ended: typed from the engine to the transports
// (the gRPC service maps it to its enum once, in server/grpc/api_convert.cc).
// Torch-free.
#pragma once

#include <string_view>

namespace blip2::engine {

enum class FinishReason {
  kLength,      // max_new_tokens reached
  kEos,         // a stop id was produced (and is the last token)
  kStopString,  // a stop string appeared in the text (the text is cut before it)
  kCancelled,   // the caller cancelled the request
};

// "length", "eos", "stop_string", "cancelled": for logs and JSON output.
constexpr std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

}  // namespace blip2::engine
