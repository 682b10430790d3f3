// Writes a randomly initialised BLIP-2 checkpoint (config files plus one
// safetensors file) of a released model's shape, so the real loading and
// compute paths can be timed without the real weights.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/cli_flags.h"

namespace blip2::bench {

// Salesforce/blip2-opt-2.7b's shape: ViT-g 39 x 1408 (16 heads), Q-Former
// 12 x 768 with 32 queries, projection to 2560, and with `with_language_model`
// the OPT-2.7b decoder (32 x 2560, 32 heads, FFN 10240, vocabulary 50304).
// Weights are stored as bfloat16 (half the disk of float32) and written one
// tensor at a time; the loader converts them.
absl::Status WriteSyntheticOpt27b(const std::string& dir, bool with_language_model);

// Writes that model to a temporary folder, runs `use(dir)`, removes the folder.
absl::Status WithSyntheticOpt27b(bool with_language_model, const std::function<void(const std::string& dir)>& use);

// The models a benchmark program measures, in order: the tiny fixture (--tiny
// DIR, default `tiny_dir`) unless --skip-tiny, --model DIR when given, and the
// random full-size model unless --skip-synthetic. Calls measure(label, dir)
// for each; an error when the random model could not be written.
absl::Status ForEachBenchModel(const common::CliFlags& flags, const std::string& tiny_dir, bool with_language_model,
                               const std::string& synthetic_label,
                               const std::function<void(const std::string& label, const std::string& dir)>& measure);

// A distinct preprocessed image [C, H, W] per seed: one shared random image
// with a seed-dependent stripe, so making thousands of them costs little.
std::vector<float> RandomImage(const std::vector<int64_t>& shape, uint32_t seed);

// Small helpers the benchmark programs share.
using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point start);
double Median(std::vector<double> values);
// Writes the report as JSON to `path` (nothing when empty) and says so.
void SaveReport(const std::string& json_text, const std::string& path);

}  // namespace blip2::bench
