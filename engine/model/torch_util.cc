#include "engine/model/torch_util.h"

#include <unistd.h>

#include <fstream>
#include <map>
#include <mutex>

#include <torch/version.h>
// The device-generic allocator interface (c10::DeviceAllocator) exists from
// LibTorch 2.10 on; older versions report no device memory.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
#include <c10/core/CachingDeviceAllocator.h>
#define BLIP2_HAVE_DEVICE_ALLOCATOR 1
#endif

#include <c10/util/Exception.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace blip2::engine {

at::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF64: return at::kDouble;
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI64: return at::kLong;
    case DType::kI32: return at::kInt;
    case DType::kI16: return at::kShort;
    case DType::kI8: return at::kChar;
    case DType::kU8: return at::kByte;
    case DType::kBool: return at::kBool;
  }
  return at::kFloat;
}

absl::StatusOr<at::ScalarType> ParseComputeDType(const std::string& name) {
  if (name == "float32" || name == "fp32") return at::kFloat;
  if (name == "float16" || name == "fp16") return at::kHalf;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype \"", name, "\" (float32, float16, bfloat16)"));
}

absl::StatusOr<at::Device> ParseDevice(const std::string& name) {
  try {
    at::Device device(name);
    if (device.is_cuda() && !at::hasCUDA()) {
      return absl::FailedPreconditionError(absl::StrCat("device \"", name, "\": CUDA is not available here"));
    }
    if (!device.is_cpu() && !device.is_cuda()) {
      return absl::InvalidArgumentError(absl::StrCat("device \"", name, "\": only cpu and cuda are supported"));
    }
    return device;
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("unknown device \"", name, "\" (cpu, cuda, cuda:N)"));
  }
}

at::Tensor ToTensor(const TensorView& view, at::ScalarType dtype, const at::Device& device) {
  const at::ScalarType stored = ToScalarType(view.dtype);
  const auto options = at::TensorOptions().dtype(stored);
  if (view.nbytes == 0) return at::empty(view.shape, options).to(device, dtype);
  // Straight from the mapping into the new tensor, converting on the way: one
  // pass over the bytes, parallel over LibTorch's intra-op threads (which
  // also take the page faults side by side). Data offsets need not be aligned
  // for the type; an unaligned tensor is copied out first.
  if (reinterpret_cast<uintptr_t>(view.data) % DTypeSize(view.dtype) != 0) {
    at::Tensor host = at::empty(view.shape, options);
    std::memcpy(host.data_ptr(), view.data, view.nbytes);
    return host.to(device, dtype);
  }
  const at::Tensor mapped = at::from_blob(const_cast<std::byte*>(view.data), view.shape, options);
  return mapped.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
}

at::Tensor Activate(const at::Tensor& x, Activation activation) {
  switch (activation) {
    case Activation::kGeluErf: return at::gelu(x);
    case Activation::kGeluTanh: return at::gelu(x, "tanh");
    case Activation::kRelu: return at::relu(x);
    case Activation::kSilu: return at::silu(x);
    case Activation::kQuickGelu: return x * at::sigmoid(1.702 * x);
  }
  return x;
}

absl::Status StatusFromException(const std::exception& e, const std::string& what) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  }
  std::string message = e.what();
  // c10 appends a C++ backtrace; the first line is what a user needs.
  if (auto nl = message.find('\n'); nl != std::string::npos) message.resize(nl);
  return absl::InternalError(absl::StrCat(what, ": ", message));
}

size_t IndexUpload::Add(const std::vector<int64_t>& values) {
  spans_.emplace_back(static_cast<int64_t>(data_.size()), static_cast<int64_t>(values.size()));
  data_.insert(data_.end(), values.begin(), values.end());
  return spans_.size() - 1;
}

void IndexUpload::Upload(const at::Device& device) {
  const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(data_.size()));
  at::Tensor host = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(device.is_cuda()));
  std::copy(data_.begin(), data_.end(), host.data_ptr<int64_t>());
  // torch's pinned-memory allocator keeps `host` alive until the copy is done.
  uploaded_ = device.is_cpu() ? host : host.to(device, /*non_blocking=*/true);
}

at::Tensor IndexUpload::Get(size_t handle) const {
  return uploaded_.narrow(0, spans_.at(handle).first, spans_.at(handle).second);
}

MemoryUse CurrentMemoryUse(const at::Device& device) {
  MemoryUse use;
  int64_t pages = 0, resident = 0;
  std::ifstream("/proc/self/statm") >> pages >> resident;
  use.host_rss_bytes = resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
#ifdef BLIP2_HAVE_DEVICE_ALLOCATOR
  if (device.is_cuda()) {
    using c10::CachingAllocator::StatType;
    const auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(device.index() < 0 ? 0 : device.index());
    const size_t all = static_cast<size_t>(StatType::AGGREGATE);
    use.device_allocated_bytes = stats.allocated_bytes[all].current;
    use.device_reserved_bytes = stats.reserved_bytes[all].current;
    use.device_peak_allocated_bytes = stats.allocated_bytes[all].peak;
  }
#endif
  return use;
}

}  // namespace blip2::engine

namespace blip2::engine {
namespace {

// Whether the fused CPU attention runs `dtype` at a length that takes its
// blocked path (probed once per dtype; the answer depends only on the build
// and ATEN_CPU_CAPABILITY).
bool FusedCpuAttentionWorks(at::ScalarType dtype) {
  static std::mutex mu;
  static std::map<at::ScalarType, bool> known;
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find(dtype);
  if (it != known.end()) return it->second;
  bool works = true;
  try {
    const at::Tensor q = at::zeros({1, 1, 128, 16}, at::TensorOptions().dtype(dtype));
    at::scaled_dot_product_attention(q, q, q, std::nullopt, 0.0, false, 1.0);
  } catch (const c10::Error&) {
    works = false;
  }
  return known[dtype] = works;
}

}  // namespace

at::Tensor ScaledDotAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, double scale) {
  if (q.device().is_cpu() && q.scalar_type() != at::kFloat && !FusedCpuAttentionWorks(q.scalar_type())) {
    // In float32, as the fused kernel accumulates, then back to the dtype.
    std::optional<at::Tensor> float_mask = mask;
    if (mask && mask->defined() && mask->is_floating_point()) float_mask = mask->to(at::kFloat);
    return at::scaled_dot_product_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), float_mask, 0.0,
                                            false, scale)
        .to(q.scalar_type());
  }
  return at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, scale);
}

}  // namespace blip2::engine
