#include "tests/parity/perturbed_checkpoint.h"

#include <filesystem>
#include <functional>
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

// What `noise` returns for a float weight: the perturbed weight, float32.
using Noise = std::function<at::Tensor(const std::string& name, const at::Tensor& w, at::Generator& rng)>;

std::string NoisyCheckpoint(const std::string& model_dir, uint64_t seed, const Noise& noise) {
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
      const at::Tensor perturbed = noise(name, w, rng).contiguous();
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

}  // namespace

std::string PerturbedCheckpoint(const std::string& model_dir, double relative, uint64_t seed) {
  return NoisyCheckpoint(model_dir, seed, [&](const std::string&, const at::Tensor& w, at::Generator& rng) {
    return w * (1 + (at::rand(w.sizes(), rng, at::kFloat) * (2 * relative) - relative));
  });
}

bool IsQuantizedLinear(const std::string& name, const std::vector<int64_t>& shape) {
  if (shape.size() != 2 || name.rfind("language_model.", 0) != 0) return false;
  for (const char* kept : {"embed", "lm_head", "shared", "relative_attention_bias"}) {
    if (name.find(kept) != std::string::npos) return false;
  }
  return true;
}

std::string Int8NoiseCheckpoint(const std::string& model_dir, uint64_t seed) {
  return NoisyCheckpoint(model_dir, seed, [&](const std::string& name, const at::Tensor& w, at::Generator& rng) {
    if (!IsQuantizedLinear(name, w.sizes().vec())) return w;
    const at::Tensor step = w.abs().amax(1, /*keepdim=*/true) / 127.0;
    return w + (at::rand(w.sizes(), rng, at::kFloat) - 0.5) * step;
  });
}

}  // namespace blip2::testing
