// Checkpoint files: a safetensors file (its header: length, JSON, dtypes,
// shapes, offsets) and model.safetensors.index.json beside a valid shard. The
// first byte chooses which.
#include "engine/model/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

// A folder with one valid shard, into which each index input is written.
const std::string& IndexDir() {
  static const std::string dir = [] {
    const std::string d = blip2::fuzz::ScratchDir() + "/index";
    mkdir(d.c_str(), 0700);
    blip2::engine::TensorToWrite t{"a.weight", blip2::engine::DType::kF32, {2}, std::string(8, '\0')};
    blip2::engine::WriteSafetensors(d + "/model-00001-of-00001.safetensors", {t}).IgnoreError();
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest = blip2::fuzz::Bytes(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    auto file = blip2::engine::SafetensorsFile::Open(blip2::fuzz::WriteScratch("input.safetensors", rest));
    if (file.ok()) {
      for (const auto& [name, view] : (*file)->tensors()) (void)view.numel();
    }
  } else {
    std::ofstream(IndexDir() + "/model.safetensors.index.json", std::ios::trunc) << rest;
    auto checkpoint = blip2::engine::Checkpoint::Open(IndexDir());
    if (checkpoint.ok()) {
      for (const std::string& name : (*checkpoint)->Names()) (void)(*checkpoint)->Get(name);
    }
  }
  return 0;
}
