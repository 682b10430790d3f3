#include "tests/parity/heldout_set.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "engine/model/safetensors.h"
#include "tests/catch.h"

namespace blip2::testing {

namespace fs = std::filesystem;

namespace {

HeldoutSet Load(const fs::path& dir) {
  HeldoutSet set;
  set.model_dir = dir.string();
  set.name = dir.filename().string();
  const auto text = common::ReadFile((dir / "heldout.json").string());
  if (!text.ok()) throw std::runtime_error(std::string(text.status().message()));
  const nlohmann::json json = nlohmann::json::parse(*text);
  set.metrics = json.value("metrics", nlohmann::json::object());
  auto file = engine::SafetensorsFile::Open((dir / "heldout.safetensors").string());
  if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
  const engine::TensorView& images = (*file)->tensors().at("images");  // uint8 [N, H, W, 3]
  const auto& items = json.at("items");
  if (images.dtype != engine::DType::kU8 || images.shape.size() != 4 || images.shape[3] != 3 ||
      images.shape[0] != static_cast<int64_t>(items.size())) {
    throw std::runtime_error(set.name + ": heldout.safetensors images are not uint8 [" +
                             std::to_string(items.size()) + ", H, W, 3]");
  }
  const size_t per_image = images.nbytes / items.size();
  for (size_t i = 0; i < items.size(); ++i) {
    HeldoutItem item;
    item.image.height = images.shape[1];
    item.image.width = images.shape[2];
    item.image.pixels.resize(per_image);
    std::memcpy(item.image.pixels.data(), images.data + i * per_image, per_image);
    item.caption = items[i].at("caption").get<std::string>();
    for (const auto& qa : items[i].at("qa")) {
      item.questions.emplace_back(qa.at("question").get<std::string>(), qa.at("answer").get<std::string>());
    }
    set.items.push_back(std::move(item));
  }
  return set;
}

}  // namespace

std::vector<HeldoutSet> DiscoverHeldoutSets(const std::string& fixtures_dir) {
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(fixtures_dir)) {
    if (fs::exists(entry.path() / "heldout.json") && fs::exists(entry.path() / "heldout.safetensors")) {
      dirs.push_back(entry.path());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  std::vector<HeldoutSet> sets;
  for (const fs::path& dir : dirs) sets.push_back(Load(dir));
  return sets;
}

void Score::Add(const std::string& expected, const std::string& got, const std::string& what) {
  ++total_;
  if (absl::StripAsciiWhitespace(got) == absl::StripAsciiWhitespace(expected)) {
    ++right_;
  } else if (wrong_.size() < 5) {
    wrong_.push_back(absl::StrCat(what, ": expected \"", expected, "\", got \"", got, "\""));
  }
}

std::string Score::Summary() const {
  std::string out = absl::StrCat(right_, "/", total_, " (", 100.0 * rate(), "%)");
  for (const std::string& w : wrong_) absl::StrAppend(&out, "; ", w);
  return out;
}

void CheckMostlyRight(const std::string& what, const Score& captions, const Score& answers) {
  std::printf("SEMANTIC %s: captions %s | answers %s\n", what.c_str(), captions.Summary().c_str(),
              answers.Summary().c_str());
  INFO(what << ": captions " << captions.Summary());
  CHECK(captions.rate() >= 0.9);
  INFO(what << ": answers " << answers.Summary());
  CHECK(answers.rate() >= 0.9);
}

}  // namespace blip2::testing
