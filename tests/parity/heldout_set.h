// The held-out scenes a trained fixture model is judged on: heldout.json and
// heldout.safetensors beside its weights (scripts/train_demo_model.py writes
// them), images it never saw with the caption and answers each one determines.
// Parity tests check that we compute what transformers computes; these check
// that what we compute is *right*, which a subtle numeric bug can break while
// staying within parity tolerances.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model/image_preprocessor.h"

namespace blip2::testing {

struct HeldoutItem {
  engine::RgbImage image;
  std::string caption;
  std::vector<std::pair<std::string, std::string>> questions;  // question, answer
};

struct HeldoutSet {
  std::string model_dir;
  std::string name;
  std::vector<HeldoutItem> items;
  nlohmann::json metrics;  // what transformers scored on them (heldout.json "metrics")
};

// Every folder under `fixtures_dir` with heldout.json and heldout.safetensors.
std::vector<HeldoutSet> DiscoverHeldoutSets(const std::string& fixtures_dir);

// Right answers out of all, with the first few wrong ones for the test's message.
class Score {
 public:
  // Compares after trimming whitespace (transformers' users strip the decoded text).
  void Add(const std::string& expected, const std::string& got, const std::string& what);
  int right() const { return right_; }
  int total() const { return total_; }
  double rate() const { return total_ == 0 ? 0 : double(right_) / total_; }
  std::string Summary() const;  // "187/200 (93.5%); wrong: ..."

 private:
  int right_ = 0;
  int total_ = 0;
  std::vector<std::string> wrong_;
};

// Prints "SEMANTIC <what>: captions ... | answers ..." (the numbers in notes)
// and checks that at least 90% of each are right.
void CheckMostlyRight(const std::string& what, const Score& captions, const Score& answers);

}  // namespace blip2::testing
