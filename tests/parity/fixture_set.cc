#include "tests/parity/fixture_set.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "common/file_util.h"
#include "tests/catch.h"

namespace blip2::testing {

namespace fs = std::filesystem;

namespace {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  int exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal
      exp = 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3FFu;
      bits = sign | uint32_t(exp + 112) << 23 | mant << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | mant << 13;
  } else {
    bits = sign | uint32_t(exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

std::vector<float> FixtureModel::Values(const std::string& key) const {
  const engine::TensorView& v = tensors->tensors().at(key);
  std::vector<float> out(v.numel());
  for (size_t i = 0; i < out.size(); ++i) {
    switch (v.dtype) {
      case engine::DType::kF32: std::memcpy(&out[i], v.data + 4 * i, 4); break;
      case engine::DType::kF16: {
        uint16_t h;
        std::memcpy(&h, v.data + 2 * i, 2);
        out[i] = HalfToFloat(h);
        break;
      }
      case engine::DType::kBF16: {
        uint16_t b;
        std::memcpy(&b, v.data + 2 * i, 2);
        const uint32_t bits = uint32_t(b) << 16;
        std::memcpy(&out[i], &bits, 4);
        break;
      }
      default: throw std::runtime_error("reference tensor " + key + " is not floating point");
    }
  }
  return out;
}

std::vector<int64_t> FixtureModel::Shape(const std::string& key) const { return tensors->tensors().at(key).shape; }

std::vector<std::string> FixtureModel::Keys() const {
  std::vector<std::string> keys;
  for (const auto& [k, v] : tensors->tensors()) keys.push_back(k);
  return keys;
}

std::vector<FixtureModel> DiscoverModels(const std::string& fixtures_dir) {
  std::vector<FixtureModel> models;
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(fixtures_dir)) {
    if (entry.is_directory()) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const fs::path& dir : dirs) {
    if (!fs::exists(dir / "config.json") || !fs::exists(dir / "reference.safetensors")) continue;
    FixtureModel m;
    m.name = dir.filename().string();
    m.dir = dir.string();
    if (fs::exists(dir / "reference.json")) {
      m.reference = nlohmann::json::parse(*common::ReadFile((dir / "reference.json").string()));
    }
    auto file = engine::SafetensorsFile::Open((dir / "reference.safetensors").string());
    if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
    m.tensors = std::move(*file);
    models.push_back(std::move(m));
  }
  return models;
}

std::vector<CaseFolder> DiscoverCaseFolders(const std::string& fixtures_dir) {
  std::vector<CaseFolder> out;
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(fixtures_dir)) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());
  for (const fs::path& dir : dirs) {
    auto spec = engine::LoadModelSpec(dir.string());
    if (!spec.ok() || spec->config.is_retrieval()) continue;
    auto text = common::ReadFile((dir / "reference.json").string());
    if (!text.ok()) continue;
    nlohmann::json reference = nlohmann::json::parse(*text);
    if (!reference.contains("cases")) continue;
    out.push_back({dir.string(), dir.filename().string(), std::move(*spec), std::move(reference)});
  }
  return out;
}

size_t NewIdsStart(const engine::ModelSpec& spec, const nlohmann::json& c) {
  return spec.config.language_model == engine::LanguageModelKind::kT5 ? 1 : c["input_ids"].size();
}

int64_t ReturnedPadId(const engine::ModelSpec& spec) {
  const int64_t pad = spec.generation.pad_token_id.value_or(0);
  return pad != 0 || spec.generation.eos_token_id.empty() ? pad : spec.generation.eos_token_id[0];
}

std::vector<float> ReferencePixels(const std::vector<FixtureModel>& all, const std::string& image,
                                   const std::string& model_dir) {
  const std::string key = "pixel_values." + image;
  for (const FixtureModel& m : all) {
    if (fs::equivalent(m.dir, model_dir) && m.HasTensor(key)) return m.Values(key);
  }
  auto spec = engine::LoadModelSpec(model_dir);
  INFO(model_dir << ": " << spec.status().ToString());
  REQUIRE(spec.ok());
  const std::vector<int64_t> shape = {1, 3, spec->image_processor.height, spec->image_processor.width};
  for (const FixtureModel& m : all) {
    if (m.HasTensor(key) && m.Shape(key) == shape) return m.Values(key);
  }
  FAIL("no fixture has " << key << " at " << engine::ShapeString(shape));
  return {};
}

engine::GenerationOverrides OverridesFromKwargs(const nlohmann::json& kwargs) {
  engine::GenerationOverrides o;
  for (const auto& [key, value] : kwargs.items()) {
    const absl::Status s = engine::ApplyGenerateKwarg(key, value, &o);
    INFO(s.ToString());
    REQUIRE(s.ok());
  }
  o.seed = 0;
  return o;
}

std::string FindImage(const std::string& fixtures_dir, const std::string& stem) {
  const fs::path images = fs::path(fixtures_dir) / "images";
  if (!fs::is_directory(images)) return "";
  for (const auto& entry : fs::directory_iterator(images)) {
    if (entry.path().stem().string() == stem) return entry.path().string();
  }
  return "";
}

Difference Compare(const std::vector<float>& ours, const std::vector<float>& reference) {
  Difference d;
  if (ours.size() != reference.size()) {
    d.max_abs = INFINITY;
    return d;
  }
  double sum = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    const double diff = std::abs(double(ours[i]) - double(reference[i]));
    d.max_abs = std::isnan(diff) ? INFINITY : std::max(d.max_abs, diff);
    d.max_ref = std::max(d.max_ref, std::abs(double(reference[i])));
    sum += diff;
  }
  d.mean_abs = ours.empty() ? 0 : sum / double(ours.size());
  return d;
}

}  // namespace blip2::testing
