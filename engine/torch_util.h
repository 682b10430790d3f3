// LibTorch helpers shared by the model code. Internal to the engine: this header
// includes ATen, so only engine sources and engine-only tests may include it
// (never anything that also sees protobuf or gRPC headers; see docs/torch-and-protobuf.md).
#pragma once

#include <string>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"

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
absl::Status StatusFromException(const std::exception& e, const std::string& what);

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
