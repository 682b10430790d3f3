// Fetches named tensors from a checkpoint with the shape the config implies,
// converted to the dtype and device a module computes in. Internal (ATen).
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/safetensors.h"

namespace blip2::engine {

// How a model part keeps the weights of its linear layers.
enum class LinearWeights {
  kDense,  // in the compute dtype, as stored
  kInt8,   // per-output-channel symmetric int8, quantized at load (Linear)
};

// "" or "none": kDense; "int8": kInt8; anything else INVALID_ARGUMENT.
absl::StatusOr<LinearWeights> ParseQuantization(const std::string& name);

class WeightLoader {
 public:
  WeightLoader(const Checkpoint& checkpoint, at::Device device, LinearWeights linear_weights = LinearWeights::kDense)
      : checkpoint_(checkpoint), device_(device), linear_weights_(linear_weights) {}

  // The tensor in `dtype` on the loader's device (or `device`), read once from
  // the checkpoint and released from memory after. NOT_FOUND naming the tensor
  // when absent; INVALID_ARGUMENT naming the tensor, its stored shape and the
  // expected one when they differ.
  absl::StatusOr<at::Tensor> Get(const std::string& name, const std::vector<int64_t>& shape,
                                 at::ScalarType dtype) const;
  absl::StatusOr<at::Tensor> Get(const std::string& name, const std::vector<int64_t>& shape, at::ScalarType dtype,
                                 at::Device device) const;
  bool Has(const std::string& name) const { return checkpoint_.Has(name); }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  at::Device device() const { return device_; }
  LinearWeights linear_weights() const { return linear_weights_; }

 private:
  const Checkpoint& checkpoint_;
  at::Device device_;
  LinearWeights linear_weights_;
};

// Parameters of a torch.nn.Linear, LayerNorm and the like. A Linear holds
// either `weight` in the compute dtype or, with int8 weights, `qweight` and
// `scales` (row o of the weight is qweight[o] * scales[o]); callers only call it.
struct Linear {
  at::Tensor weight;   // [out, in], or undefined with int8 weights
  at::Tensor bias;     // [out], or undefined
  at::Tensor qweight;  // [out, in] int8, with int8 weights
  at::Tensor scales;   // [out] in the compute dtype, with int8 weights
  at::Tensor operator()(const at::Tensor& x) const;
  // The dtype it computes in (its inputs' dtype).
  at::ScalarType dtype() const { return weight.defined() ? weight.scalar_type() : scales.scalar_type(); }
};

// Per-output-channel symmetric int8 of a [out, in] float weight: scales are
// max|row| / 127 rounded to `dtype` (the kernel takes them in the input's
// dtype), and each value is rounded against its row's rounded scale.
void QuantizeInt8(const at::Tensor& weight, at::ScalarType dtype, at::Tensor* qweight, at::Tensor* scales);

// FAILED_PRECONDITION naming the device and dtype when this LibTorch has no
// int8-weight matmul for them (probed once with a tiny product).
absl::Status CheckInt8Supported(const at::Device& device, at::ScalarType dtype);

struct LayerNorm {
  at::Tensor weight;  // [dim], or undefined (no elementwise affine)
  at::Tensor bias;
  double eps = 1e-5;
  int64_t dim = 0;
  at::Tensor operator()(const at::Tensor& x) const { return at::layer_norm(x, {dim}, weight, bias, eps); }
};

absl::StatusOr<Linear> LoadLinear(const WeightLoader& w, const std::string& prefix, int64_t in, int64_t out,
                                  at::ScalarType dtype, bool has_bias = true);
absl::StatusOr<LayerNorm> LoadLayerNorm(const WeightLoader& w, const std::string& prefix, int64_t dim, double eps,
                                        at::ScalarType dtype, bool affine = true);

}  // namespace blip2::engine
