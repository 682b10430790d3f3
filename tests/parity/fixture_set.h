// Discovers fixture models and their reference tensors from a fixtures folder
// (BLIP2_FIXTURES_DIR): every sub-folder with config.json and
// reference.safetensors is a model; images live in images/. Nothing here knows
// a model's name or size.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/generation/generation_params.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"

namespace blip2::testing {

struct FixtureModel {
  std::string name;
  std::string dir;
  nlohmann::json reference;  // reference.json
  std::unique_ptr<engine::SafetensorsFile> tensors;  // reference.safetensors

  bool HasTensor(const std::string& key) const { return tensors->tensors().count(key) > 0; }
  // The reference tensor as float32 values (it may be stored in any float dtype).
  std::vector<float> Values(const std::string& key) const;
  std::vector<int64_t> Shape(const std::string& key) const;
  std::vector<std::string> Keys() const;
};

std::vector<FixtureModel> DiscoverModels(const std::string& fixtures_dir);

// A folder with a language model (OPT or T5) whose reference.json has
// generation "cases" (it may have no reference.safetensors, as the -eos folders).
struct CaseFolder {
  std::string dir;
  std::string name;
  engine::ModelSpec spec;
  nlohmann::json reference;
};
std::vector<CaseFolder> DiscoverCaseFolders(const std::string& fixtures_dir);

// Where a returned sequence's new ids start in a case's `sequences`: after
// the OPT prompt (`input_ids`), after T5's decoder start token.
size_t NewIdsStart(const engine::ModelSpec& spec, const nlohmann::json& c);
// What transformers pads shorter returned sequences with: pad_token_id, or
// the first stop id when that is 0 (the T5 fixtures).
int64_t ReturnedPadId(const engine::ModelSpec& spec);

// The reference pixels of `image` as the model in `model_dir` preprocesses it:
// that folder's own tensor, else another fixture's of the same size (an -eos
// folder has none of its own); a test failure when none does. Folders may
// store the same image at different sizes.
std::vector<float> ReferencePixels(const std::vector<FixtureModel>& all, const std::string& image,
                                   const std::string& model_dir);

// transformers' generate kwargs (a run's "kwargs") as our overrides, seed 0;
// a test failure naming a kwarg we do not take.
engine::GenerationOverrides OverridesFromKwargs(const nlohmann::json& kwargs);

// The file in images/ whose name without extension is `stem`; empty if none.
std::string FindImage(const std::string& fixtures_dir, const std::string& stem);

struct Difference {
  double max_abs = 0;
  double mean_abs = 0;
  double max_ref = 0;  // largest |reference| value
};
Difference Compare(const std::vector<float>& ours, const std::vector<float>& reference);

}  // namespace blip2::testing
