#include "tests/parity/perturbed_checkpoint.h"

#include <filesystem>
#include <vector>

#include <ATen/ATen.h>

#include "engine/model/safetensors.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

std::optional<at::ScalarType> FloatType(engine::DType dtype) {
  switch (dtype) {
    case engine::DType::kF32: return at::kFloat;
    case engine::DType::kF16: return at::kHalf;
    case engine::DType::kBF16: return at::kBFloat16;
    default: return std::nullopt;
  }
}

}  // namespace

std::string PerturbedCheckpoint(const std::string& model_dir, double relative, uint64_t seed) {
  namespace fs = std::filesystem;
  auto checkpoint = engine::Checkpoint::Open(model_dir);
  REQUIRE(checkpoint.ok());
  at::Generator rng = at::detail::createCPUGenerator(seed);
  std::vector<engine::TensorToWrite> tensors;
  for (const std::string& name : (*checkpoint)->Names()) {
    const engine::TensorView view = *(*checkpoint)->Get(name);
    engine::TensorToWrite out{name, view.dtype, view.shape, {}};
    if (const auto type = FloatType(view.dtype)) {
      const at::Tensor w = at::from_blob(const_cast<std::byte*>(view.data), view.shape, *type).to(at::kFloat);
      const at::Tensor noise = at::rand(view.shape, rng, at::kFloat) * (2 * relative) - relative;
      const at::Tensor perturbed = (w * (1 + noise)).contiguous();
      out.dtype = engine::DType::kF32;
      out.bytes.assign(static_cast<const char*>(perturbed.data_ptr()), perturbed.nbytes());
    } else {
      out.bytes.assign(reinterpret_cast<const char*>(view.data), view.nbytes);
    }
    tensors.push_back(std::move(out));
  }
  const std::string dir = MakeTempDir();
  REQUIRE(engine::WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  for (const fs::directory_entry& e : fs::directory_iterator(model_dir)) {
    const std::string file = e.path().filename().string();
    if (!e.is_regular_file() || e.path().extension() == ".safetensors" || file == "model.safetensors.index.json" ||
        file.rfind("reference.", 0) == 0) {
      continue;
    }
    fs::copy_file(e.path(), dir + "/" + file);
  }
  return dir;
}

}  // namespace blip2::testing
