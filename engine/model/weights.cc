#include "engine/model/weights.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/torch_util.h"
#include "engine/model/int8_gemv.h"

#include <ATen/Parallel.h>

#include <malloc.h>

namespace blip2::engine {

absl::StatusOr<LinearWeights> ParseQuantization(const std::string& name) {
  if (name.empty() || name == "none") return LinearWeights::kDense;
  if (name == "int8") return LinearWeights::kInt8;
  return absl::InvalidArgumentError(absl::StrCat("unknown quantization \"", name, "\" (none, int8)"));
}

absl::StatusOr<at::Tensor> WeightLoader::Get(const std::string& name, const std::vector<int64_t>& shape,
                                             at::ScalarType dtype) const {
  return Get(name, shape, dtype, device_);
}

absl::StatusOr<at::Tensor> WeightLoader::Get(const std::string& name, const std::vector<int64_t>& shape,
                                             at::ScalarType dtype, at::Device device) const {
  ASSIGN_OR_RETURN(TensorView view, checkpoint_.Get(name));
  if (view.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(view.file, ": tensor \"", name, "\" has shape ",
                                                   ShapeString(view.shape), " but config.json implies ",
                                                   ShapeString(shape)));
  }
  if (view.dtype != DType::kF32 && view.dtype != DType::kF16 && view.dtype != DType::kBF16 &&
      view.dtype != DType::kF64) {
    return absl::InvalidArgumentError(absl::StrCat(view.file, ": tensor \"", name, "\" is stored as ",
                                                   DTypeName(view.dtype), "; weights must be floating point"));
  }
  checkpoint_.Prefetch(view);
  at::Tensor tensor = ToTensor(view, dtype, device);
  // The copy is ours now: the file's pages need not stay in our resident set.
  checkpoint_.Release(view);
  return tensor;
}

namespace {

// Up to this many rows (decode steps, a caption's prefill of ~40 tokens) the
// product streams the int8 weights, once per tile of eight rows; more rows
// dequantize the layer to float32 once and use the dense GEMM, which reuses
// each weight for every row. At 64 rows the two cost about the same on an
// AVX2 core (eight passes over one byte a weight against four bytes written
// and read again, plus the same multiply-adds).
constexpr int64_t kMaxStreamedRows = 64;

at::Tensor Int8Product(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales) {
  const int64_t rows = x.size(0), in = x.size(1), out = qweight.size(0);
  if (x.is_cpu() && rows > kMaxStreamedRows) {
    const at::Tensor dense = qweight.to(at::kFloat) * scales.to(at::kFloat).unsqueeze(1);
    return at::linear(x.to(at::kFloat), dense).to(x.scalar_type());
  }
#ifdef BLIP2_HAVE_INT8_GEMV
  if (x.is_cpu() && cpu::HasAvx2Fma()) {
    const at::Tensor xf = x.to(at::kFloat).contiguous();
    const at::Tensor sf = scales.to(at::kFloat).contiguous();
    at::Tensor y = at::empty({rows, out}, xf.options());
    const float* xp = xf.data_ptr<float>();
    const int8_t* wp = qweight.data_ptr<int8_t>();
    const float* sp = sf.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    // Each thread takes a range of output channels: its own rows of weights.
    at::parallel_for(0, out, 16, [&](int64_t begin, int64_t end) {
      cpu::Int8GemvAvx2(xp, rows, in, wp, sp, yp, out, begin, end);
    });
    return y.to(x.scalar_type());
  }
#endif
  return at::_weight_int8pack_mm(x, qweight, scales);
}

}  // namespace

namespace cpu {
bool HasAvx2Fma() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}
}  // namespace cpu

at::Tensor Linear::operator()(const at::Tensor& x) const {
  if (!qweight.defined()) return at::linear(x, weight, bias);
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = qweight.size(0);
  at::Tensor y = Int8Product(x.reshape({-1, qweight.size(1)}).contiguous(), qweight, scales).view(out_shape);
  return bias.defined() ? y.add_(bias) : y;
}

void QuantizeInt8(const at::Tensor& weight, at::ScalarType dtype, at::Tensor* qweight, at::Tensor* scales) {
  const at::Tensor w = weight.to(at::kFloat);
  // Rounded to the compute dtype first, so each value is rounded against the
  // scale the kernel will multiply by.
  const at::Tensor rounded = (w.abs().amax(1) / 127.0).to(dtype);
  const at::Tensor s = rounded.to(at::kFloat).unsqueeze(1);
  // A row of zeros (or one whose scale underflows the dtype) stays zero.
  const at::Tensor q = at::where(s > 0, at::round(w / s).clamp(-127, 127), at::zeros_like(w));
  *qweight = q.to(at::kChar);
  *scales = rounded;
}

absl::Status CheckInt8Supported(const at::Device& device, at::ScalarType dtype) {
  try {
    const at::Tensor x = at::ones({1, 32}, at::TensorOptions().dtype(dtype).device(device));
    const at::Tensor q = at::ones({8, 32}, at::TensorOptions().dtype(at::kChar).device(device));
    const at::Tensor s = at::ones({8}, at::TensorOptions().dtype(dtype).device(device));
    const float y = at::_weight_int8pack_mm(x, q, s).to(at::kFloat).sum().item<float>();
    if (y == 8 * 32) return absl::OkStatus();
  } catch (const std::exception&) {
  }
  return absl::FailedPreconditionError(absl::StrCat("int8 weights: this LibTorch has no int8-weight matmul for ",
                                                    device.str(), " in ", c10::toString(dtype)));
}

absl::StatusOr<Linear> LoadLinear(const WeightLoader& w, const std::string& prefix, int64_t in, int64_t out,
                                  at::ScalarType dtype, bool has_bias) {
  Linear linear;
  if (w.linear_weights() == LinearWeights::kInt8) {
    // Quantized on the host from float32, one layer at a time, then moved.
    ASSIGN_OR_RETURN(at::Tensor full, w.Get(prefix + ".weight", {out, in}, at::kFloat, at::kCPU));
    QuantizeInt8(full, dtype, &linear.qweight, &linear.scales);
    linear.qweight = linear.qweight.to(w.device());
    linear.scales = linear.scales.to(w.device());
    full.reset();
#ifdef __GLIBC__
    // The float32 copy and the quantizer's temporaries (tens of MB each) are
    // freed, but glibc keeps chunks under its growing mmap threshold in the
    // heap: without this, a 7.4 GB int8 OPT-2.7b peaked at 16.6 GB resident
    // while loading.
    malloc_trim(0);
#endif
  } else {
    ASSIGN_OR_RETURN(linear.weight, w.Get(prefix + ".weight", {out, in}, dtype));
  }
  if (has_bias) {
    ASSIGN_OR_RETURN(linear.bias, w.Get(prefix + ".bias", {out}, dtype));
  }
  return linear;
}

absl::StatusOr<LayerNorm> LoadLayerNorm(const WeightLoader& w, const std::string& prefix, int64_t dim, double eps,
                                        at::ScalarType dtype, bool affine) {
  LayerNorm norm;
  norm.eps = eps;
  norm.dim = dim;
  if (!affine) return norm;
  ASSIGN_OR_RETURN(norm.weight, w.Get(prefix + ".weight", {dim}, dtype));
  ASSIGN_OR_RETURN(norm.bias, w.Get(prefix + ".bias", {dim}, dtype));
  return norm;
}

}  // namespace blip2::engine
