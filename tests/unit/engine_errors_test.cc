// Loading and running the image path through its public face: checkpoints that
// disagree with their config, both vision-bias layouts, bad options and inputs.
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "engine/model/image_encoder.h"
#include "engine/model/safetensors.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

namespace fs = std::filesystem;
using testing::FixturesDir;
using testing::MakeTempDir;

// A copy of a single-file fixture model whose tensors and config a test may edit.
std::string CopyModel(const std::string& name) {
  const std::string dir = MakeTempDir();
  for (const auto& entry : fs::directory_iterator(FixturesDir() + "/" + name)) {
    fs::copy_file(entry.path(), dir + "/" + entry.path().filename().string());
  }
  return dir;
}

std::vector<TensorToWrite> ReadAll(const std::string& dir) {
  auto ckpt = Checkpoint::Open(dir);
  REQUIRE(ckpt.ok());
  std::vector<TensorToWrite> out;
  for (const std::string& name : (*ckpt)->Names()) {
    const TensorView v = *(*ckpt)->Get(name);
    out.push_back({name, v.dtype, v.shape, std::string(reinterpret_cast<const char*>(v.data), v.nbytes)});
  }
  return out;
}

void EditConfig(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = nlohmann::json::parse(testing::ReadFileOrDie(dir + "/config.json"));
  edit(j);
  testing::WriteFile(dir + "/config.json", j.dump());
}

std::vector<float> Pixels(const ImageEncoder& encoder, float value) {
  const auto s = encoder.pixel_shape();
  return std::vector<float>(s[0] * s[1] * s[2], value);
}

TEST_CASE("engine: a tensor shape that disagrees with the config is named") {
  const std::string dir = CopyModel("blip2-tiny-itm");
  EditConfig(dir, [](nlohmann::json& j) { j["vision_config"]["intermediate_size"] = 48; });
  const absl::Status s = ImageEncoder::Load({dir}).status();
  INFO(s.ToString());
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(s.message().find("vision_model.encoder.layers.0.mlp.fc1.weight\" has shape [64, 32]") != std::string::npos);
  CHECK(s.message().find("implies [48, 32]") != std::string::npos);
}

TEST_CASE("engine: a tensor missing from the checkpoint is named") {
  const std::string dir = CopyModel("blip2-tiny-itm");
  auto tensors = ReadAll(dir);
  std::erase_if(tensors, [](const TensorToWrite& t) { return t.name == "qformer.layernorm.bias"; });
  REQUIRE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  const absl::Status s = ImageEncoder::Load({dir}).status();
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(s.message().find("qformer.layernorm.bias") != std::string::npos);
}

TEST_CASE("engine: q_bias + v_bias checkpoints equal a fused qkv.bias with a zero key part") {
  const std::string fused_dir = CopyModel("blip2-tiny-itm");
  const std::string split_dir = CopyModel("blip2-tiny-itm");
  auto fused = ReadAll(fused_dir);
  std::vector<TensorToWrite> split;
  for (TensorToWrite& t : fused) {
    if (t.name.ends_with(".self_attn.qkv.bias")) {
      const size_t third = t.bytes.size() / 3;
      std::fill(t.bytes.begin() + third, t.bytes.begin() + 2 * third, '\0');  // zero key bias
      const std::string prefix = t.name.substr(0, t.name.size() - std::string("qkv.bias").size());
      const int64_t d = t.shape[0] / 3;
      split.push_back({prefix + "q_bias", t.dtype, {d}, t.bytes.substr(0, third)});
      split.push_back({prefix + "v_bias", t.dtype, {d}, t.bytes.substr(2 * third)});
    } else {
      split.push_back(t);
    }
  }
  REQUIRE(WriteSafetensors(fused_dir + "/model.safetensors", fused).ok());
  REQUIRE(WriteSafetensors(split_dir + "/model.safetensors", split).ok());
  auto a = ImageEncoder::Load({fused_dir});
  auto b = ImageEncoder::Load({split_dir});
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  auto ea = (*a)->Encode({Pixels(**a, 0.25f)});
  auto eb = (*b)->Encode({Pixels(**b, 0.25f)});
  REQUIRE(ea.ok());
  REQUIRE(eb.ok());
  CHECK(ea->embeddings.values == eb->embeddings.values);
}

TEST_CASE("engine: bad device, dtype and folder") {
  const std::string model = FixturesDir() + "/blip2-tiny-opt";
  CHECK(ImageEncoder::Load({model, "tpu"}).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ImageEncoder::Load({model, "cpu", "int8"}).status().message().find("unknown dtype") != std::string::npos);
  CHECK(ImageEncoder::Load({"/nonexistent/model"}).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("engine: wrongly sized pixel inputs are refused and the encoder keeps working") {
  auto encoder = ImageEncoder::Load({FixturesDir() + "/blip2-tiny-opt"});
  REQUIRE(encoder.ok());
  CHECK((*encoder)->Encode({}).status().code() == absl::StatusCode::kInvalidArgument);
  const absl::Status s = (*encoder)->Encode({std::vector<float>(10)}).status();
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  const auto px = (*encoder)->pixel_shape();
  CHECK(s.message().find("expected " + std::to_string(px[0] * px[1] * px[2])) != std::string::npos);
  auto ok = (*encoder)->Encode({Pixels(**encoder, 0.0f), Pixels(**encoder, 1.0f)}, /*include_intermediates=*/true);
  REQUIRE(ok.ok());
  CHECK(ok->embeddings.shape == std::vector<int64_t>{2, 8, 32});
  CHECK(ok->vision_last_hidden_state.shape == std::vector<int64_t>{2, 257, 32});
}

}  // namespace
}  // namespace blip2::engine
