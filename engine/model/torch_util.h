// LibTorch helpers shared by the model code. Internal to the engine: this header
// includes ATen, so only engine sources and engine-only tests may include it
// (never anything that also sees protobuf or gRPC headers; see docs/torch-and-protobuf.md).
#pragma once

#include <optional>

#include <string>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"

namespace blip2::engine {

at::ScalarType ToScalarType(DType dtype);

// "float32" | "float16" | "bfloat16" (also "fp32", "fp16", "bf16").
absl::StatusOr<at::ScalarType> ParseComputeDType(const std::string& name);
// "cpu", "cuda", "cuda:N"; FAILED_PRECONDITION when CUDA is asked for but absent.
absl::StatusOr<at::Device> ParseDevice(const std::string& name);

// Copies a mapped tensor into a new tensor of `dtype` on `device`.
at::Tensor ToTensor(const TensorView& view, at::ScalarType dtype, const at::Device& device);

at::Tensor Activate(const at::Tensor& x, Activation activation);

// Turns an exception thrown by LibTorch into a status: out-of-memory becomes
// RESOURCE_EXHAUSTED, anything else INTERNAL. `what` says which step failed.
// at::scaled_dot_product_attention (no dropout, not causal, `scale`), except
// where this LibTorch's fused CPU kernel cannot run the dtype: LibTorch 2.15's
// CPU flash attention throws for bfloat16 from 64 tokens up when its kernels
// are forced below what the CPU has (ATEN_CPU_CAPABILITY=avx2 on an AMX
// machine); there the attention runs in float32 (as the fused kernel
// accumulates) and the result is cast back.
at::Tensor ScaledDotAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, double scale);

absl::Status StatusFromException(const std::exception& e, const std::string& what);

// The small integer arrays one model step needs (token ids, positions, cache
// rows, masks), sent to the device in one copy. On CUDA the copy goes from
// pinned memory without blocking: a copy from pageable memory synchronises the
// stream, and a step that built its indices with a dozen such copies could
// never queue its kernels ahead of the device.
class IndexUpload {
 public:
  // Appends `values`; returns a handle for Get.
  size_t Add(const std::vector<int64_t>& values);
  // One host tensor, one copy; call once, after every Add.
  void Upload(const at::Device& device);
  // The array as a 1-D int64 tensor on the device (a view into one buffer).
  at::Tensor Get(size_t handle) const;

 private:
  std::vector<int64_t> data_;
  std::vector<std::pair<int64_t, int64_t>> spans_;  // start, length
  at::Tensor uploaded_;
};

// Memory in use, for benchmarks and leak checks: the process's resident set,
// and on a CUDA device what torch's caching allocator holds (-1 elsewhere).
struct MemoryUse {
  int64_t host_rss_bytes = 0;
  int64_t device_allocated_bytes = -1;
  int64_t device_reserved_bytes = -1;
  int64_t device_peak_allocated_bytes = -1;
};
MemoryUse CurrentMemoryUse(const at::Device& device);

}  // namespace blip2::engine
