// Conversions between the blip2.v1 API messages and the engine's types.
#pragma once

#include <cstdint>
#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/statusor.h"
#include "blip2.pb.h"
#include "engine/runtime/engine.h"

namespace blip2::server {

// Unset fields stay unset (the checkpoint's defaults apply).
engine::GenerationOverrides OverridesFromProto(const v1::DecodingOptions& options);
v1::DecodingOptions OverridesToProto(const engine::GenerationOverrides& overrides);

v1::FinishReason ToProto(engine::FinishReason reason);
std::string FinishReasonName(v1::FinishReason reason);  // "eos", "length", ...

void FillLogprob(const engine::TokenLogprob& logprob, v1::TokenLogprob* out);

// Sequences and usage; `image_tokens` are the query tokens the image adds.
// `offset_ms` is the time between receiving the call and submitting it to the
// engine (decoding, preprocessing), added to every latency.
void FillCompletion(const engine::CaptionResult& result, const engine::Usage& usage, int64_t image_tokens,
                    double offset_ms, v1::Completion* completion);

// absl and gRPC share the canonical status codes.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Image ids are the 64-bit content hash as 16 lowercase hex digits.
std::string FormatImageId(uint64_t key);
// INVALID_ARGUMENT for anything but 16 hex digits.
absl::StatusOr<uint64_t> ParseImageId(const std::string& id);

}  // namespace blip2::server
