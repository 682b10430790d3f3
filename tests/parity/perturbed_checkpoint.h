// A copy of a model folder whose every floating-point weight is multiplied by
// (1 + e), e uniform in [-relative, relative], stored as float32. Running it
// in float32 measures how far a checkpoint's outputs move under weight noise
// of a given relative size: with `relative` a dtype's unit roundoff, the
// scale of error that computing in that dtype costs this model, measured on
// this machine rather than assumed (tests/parity/generation_parity_test.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blip2::testing {

// Writes the copy into a fresh temporary folder and returns its path; the
// config, tokenizer and processor files come along, references do not.
std::string PerturbedCheckpoint(const std::string& model_dir, double relative, uint64_t seed);

// Whether the engine stores this tensor as int8 under quantization "int8":
// the language model's linear weights (2-D, under language_model.), not its
// embeddings, output head or T5's relative position table.
bool IsQuantizedLinear(const std::string& name, const std::vector<int64_t>& shape);

// A copy whose int8-quantized weights (IsQuantizedLinear) each move by e
// uniform in [-s/2, s/2], s = max|row| / 127: the size and shape of the error
// that per-channel int8 rounding makes, at random; other weights unchanged.
std::string Int8NoiseCheckpoint(const std::string& model_dir, uint64_t seed);

}  // namespace blip2::testing
