// The checkpoint reader: valid files, shards, and every malformed header the
// issue names, each refused with a message naming the file and the problem.
#include "engine/model/safetensors.h"

#include <cstring>

#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

using testing::MakeTempDir;
using testing::WriteFile;

std::string Floats(std::initializer_list<float> values) {
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.begin(), bytes.size());
  return bytes;
}

// A file with a hand-written header: the 8-byte length, the header, the data.
std::string Raw(const std::string& header, const std::string& data) {
  const uint64_t len = header.size();
  return std::string(reinterpret_cast<const char*>(&len), 8) + header + data;
}

absl::Status OpenStatus(const std::string& bytes) {
  const std::string path = MakeTempDir() + "/model.safetensors";
  WriteFile(path, bytes);
  return SafetensorsFile::Open(path).status();
}

void ExpectInvalid(const std::string& bytes, const std::string& fragment) {
  const absl::Status s = OpenStatus(bytes);
  INFO(s.ToString());
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(s.message().find(fragment) != std::string::npos);
  CHECK(s.message().find("model.safetensors") != std::string::npos);
}

TEST_CASE("safetensors: a written file reads back with dtypes, shapes and bytes") {
  const std::string dir = MakeTempDir();
  const std::string bf16 = std::string("\x80\x3f\x00\x40", 4);  // 1.0, 2.0 in bfloat16
  REQUIRE(WriteSafetensors(dir + "/model.safetensors",
                           {{"a", DType::kF32, {2, 2}, Floats({1, 2, 3, 4})}, {"b", DType::kBF16, {2}, bf16},
                            {"empty", DType::kF16, {0, 3}, ""}})
              .ok());
  auto ckpt = Checkpoint::Open(dir);
  REQUIRE(ckpt.ok());
  auto a = (*ckpt)->Get("a");
  REQUIRE(a.ok());
  CHECK(a->shape == std::vector<int64_t>{2, 2});
  CHECK(a->dtype == DType::kF32);
  float v[4];
  std::memcpy(v, a->data, 16);
  CHECK(v[3] == 4.0f);
  CHECK((*ckpt)->Get("b")->dtype == DType::kBF16);
  CHECK((*ckpt)->Get("empty")->numel() == 0);
  CHECK((*ckpt)->Names().size() == 3);
}

TEST_CASE("safetensors: sharded fixture opens through its index") {
  auto ckpt = Checkpoint::Open(testing::FixturesDir() + "/blip2-tiny-opt");
  REQUIRE(ckpt.ok());
  CHECK((*ckpt)->Has("query_tokens"));
  CHECK((*ckpt)->Has("vision_model.post_layernorm.weight"));
}

TEST_CASE("safetensors: files too short for a header are refused") {
  ExpectInvalid("", "too small");
  ExpectInvalid("abc", "too small");
}

TEST_CASE("safetensors: header length past the end of the file") {
  std::string bytes = Raw("{}", "");
  const uint64_t huge = 1000;
  std::memcpy(bytes.data(), &huge, 8);
  ExpectInvalid(bytes, "runs past the end of the file");
}

TEST_CASE("safetensors: header that is not JSON") {
  ExpectInvalid(Raw("{\"a\": [1, 2", ""), "not valid JSON");
  ExpectInvalid(Raw("[1, 2]", ""), "not a JSON object");
}

TEST_CASE("safetensors: offsets past the end of the data") {
  ExpectInvalid(Raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(4, '\0')),
                "run past the end of the data");
}

TEST_CASE("safetensors: overlapping offsets") {
  ExpectInvalid(Raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    std::string(12, '\0')),
                "overlap");
}

TEST_CASE("safetensors: unordered offsets (end before begin) and holes") {
  ExpectInvalid(Raw(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", std::string(8, '\0')),
                "end before they begin");
  ExpectInvalid(Raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')),
                "unused bytes");
  ExpectInvalid(Raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0')),
                "the tensors cover 4");
}

TEST_CASE("safetensors: unknown dtype") {
  ExpectInvalid(Raw(R"({"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')),
                "unknown dtype \"F12\"");
}

TEST_CASE("safetensors: byte size that disagrees with the shape") {
  ExpectInvalid(Raw(R"({"a":{"dtype":"F16","shape":[3],"data_offsets":[0,4]}})", std::string(4, '\0')),
                "disagrees with shape [3]");
}

TEST_CASE("safetensors: malformed entries") {
  ExpectInvalid(Raw(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')),
                "non-negative");
  ExpectInvalid(Raw(R"({"a":{"dtype":"F32","shape":[1]}})", std::string(4, '\0')), "data_offsets");
  ExpectInvalid(Raw(R"({"__metadata__":{"format":1}})", ""), "__metadata__.format");
}

TEST_CASE("checkpoint: a missing tensor is NOT_FOUND and named") {
  const std::string dir = MakeTempDir();
  REQUIRE(WriteSafetensors(dir + "/model.safetensors", {{"a", DType::kF32, {1}, Floats({1})}}).ok());
  auto ckpt = Checkpoint::Open(dir);
  REQUIRE(ckpt.ok());
  const absl::Status s = (*ckpt)->Get("vision_model.post_layernorm.weight").status();
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(s.message().find("vision_model.post_layernorm.weight") != std::string::npos);
}

TEST_CASE("checkpoint: an index naming a missing shard") {
  const std::string dir = MakeTempDir();
  REQUIRE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors", {{"a", DType::kF32, {1}, Floats({1})}}).ok());
  WriteFile(dir + "/model.safetensors.index.json",
            R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  const absl::Status s = Checkpoint::Open(dir).status();
  INFO(s.ToString());
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(s.message().find("model-00002-of-00002.safetensors") != std::string::npos);
}

TEST_CASE("checkpoint: an index naming a tensor its shard lacks, and a broken index") {
  const std::string dir = MakeTempDir();
  REQUIRE(WriteSafetensors(dir + "/shard.safetensors", {{"a", DType::kF32, {1}, Floats({1})}}).ok());
  WriteFile(dir + "/model.safetensors.index.json", R"({"weight_map":{"zzz":"shard.safetensors"}})");
  CHECK(Checkpoint::Open(dir).status().message().find("\"zzz\" is not in shard") != std::string::npos);
  WriteFile(dir + "/model.safetensors.index.json", "not json");
  CHECK(Checkpoint::Open(dir).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("checkpoint: a folder without weights") {
  const absl::Status s = Checkpoint::Open(MakeTempDir()).status();
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(s.message().find("no model.safetensors") != std::string::npos);
}

}  // namespace
}  // namespace blip2::engine
