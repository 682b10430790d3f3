// gRPC requests as the service validates them before any model work:
// DecodingOptions into generation parameters (against a checkpoint's
// defaults and the server's limits) and image ids. Inputs are either raw
// protobuf wire bytes of Generate and GenerateBatch requests, or messages
// built field by field from the input (structure-aware: every option present
// or not, any value, NaN and infinities included). The first byte chooses.
#include <fuzzer/FuzzedDataProvider.h>

#include <limits>

#include "absl/strings/ascii.h"
#include "blip2.pb.h"
#include "engine/generation/generation_params.h"
#include "server/grpc/api_convert.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using blip2::v1::DecodingOptions;

float AnyFloat(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: return std::numeric_limits<float>::quiet_NaN();
    case 1: return std::numeric_limits<float>::infinity();
    case 2: return -std::numeric_limits<float>::infinity();
    case 3: return in.ConsumeFloatingPointInRange<float>(-2.0f, 2.0f);
    default: return in.ConsumeFloatingPoint<float>();
  }
}

int32_t AnyInt(FuzzedDataProvider& in) {
  return in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(-2, 600) : in.ConsumeIntegral<int32_t>();
}

DecodingOptions BuildOptions(FuzzedDataProvider& in) {
  DecodingOptions o;
  if (in.ConsumeBool()) o.set_max_new_tokens(AnyInt(in));
  if (in.ConsumeBool()) o.set_min_new_tokens(AnyInt(in));
  if (in.ConsumeBool()) o.set_num_beams(AnyInt(in));
  if (in.ConsumeBool()) o.set_length_penalty(AnyFloat(in));
  if (in.ConsumeBool()) o.set_early_stopping(static_cast<DecodingOptions::EarlyStopping>(in.ConsumeIntegralInRange(0, 5)));
  if (in.ConsumeBool()) o.set_num_return_sequences(AnyInt(in));
  if (in.ConsumeBool()) o.set_do_sample(in.ConsumeBool());
  if (in.ConsumeBool()) o.set_temperature(AnyFloat(in));
  if (in.ConsumeBool()) o.set_top_k(AnyInt(in));
  if (in.ConsumeBool()) o.set_top_p(AnyFloat(in));
  if (in.ConsumeBool()) o.set_repetition_penalty(AnyFloat(in));
  if (in.ConsumeBool()) o.set_no_repeat_ngram_size(AnyInt(in));
  if (in.ConsumeBool()) o.set_seed(in.ConsumeIntegral<uint64_t>());
  if (in.ConsumeBool()) o.set_logprobs(AnyInt(in));
  const int stops = in.ConsumeIntegralInRange(0, 20);
  for (int i = 0; i < stops; ++i) o.add_stop(in.ConsumeRandomLengthString(16));
  return o;
}

void Validate(const DecodingOptions& options) {
  blip2::engine::GenerationConfig defaults;
  defaults.eos_token_id = {2};
  const auto params = blip2::engine::ResolveGenerationParams(defaults, blip2::server::OverridesFromProto(options), {});
  if (params.ok() && (params->max_new_tokens <= 0 || params->num_beams <= 0)) std::abort();  // would be a bug
  (void)blip2::server::OverridesToProto(blip2::server::OverridesFromProto(options));
}

void ValidateImage(const blip2::v1::Image& image) {
  if (image.has_image_id()) {
    auto key = blip2::server::ParseImageId(image.image_id());
    // An id that parses is 16 hex digits and names exactly that key.
    if (key.ok() && blip2::server::FormatImageId(*key) != absl::AsciiStrToLower(image.image_id())) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == 0) {  // wire bytes
    blip2::v1::GenerateRequest request;
    if (request.ParseFromArray(data + 1, static_cast<int>(size - 1))) {
      Validate(request.options());
      ValidateImage(request.image());
    }
    blip2::v1::GenerateBatchRequest batch;
    if (batch.ParseFromArray(data + 1, static_cast<int>(size - 1))) {
      Validate(batch.options());
      for (const auto& item : batch.items()) ValidateImage(item.image());
    }
    return 0;
  }
  FuzzedDataProvider in(data + 1, size - 1);
  Validate(BuildOptions(in));
  blip2::v1::Image image;
  image.set_image_id(in.ConsumeRandomLengthString(24));
  ValidateImage(image);
  return 0;
}
