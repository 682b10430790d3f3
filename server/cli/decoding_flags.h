// The decoding flags `blip2 generate` and `blip2 client` share.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cli_flags.h"
#include "engine/generation/generation_params.h"

namespace blip2::server {

// --max-new-tokens --min-new-tokens --num-beams --num-return-sequences --top-k
// --no-repeat-ngram-size --length-penalty --temperature --top-p
// --repetition-penalty --early-stopping --seed --stop (repeatable).
const std::vector<std::string>& DecodingFlagNames();

// Flags -> overrides; unset flags leave generation_config.json's values.
// INVALID_ARGUMENT names a flag whose value does not parse.
absl::StatusOr<engine::GenerationOverrides> OverridesFromFlags(const common::CliFlags& flags);

}  // namespace blip2::server
