// Fetches named tensors from a checkpoint with the shape the config implies,
// converted to the dtype and device a module computes in. Internal (ATen).
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/safetensors.h"

namespace blip2::engine {

class WeightLoader {
 public:
  WeightLoader(const Checkpoint& checkpoint, at::Device device) : checkpoint_(checkpoint), device_(device) {}

  // NOT_FOUND naming the tensor when absent; INVALID_ARGUMENT naming the tensor,
  // its stored shape and the expected one when they differ.
  absl::StatusOr<at::Tensor> Get(const std::string& name, const std::vector<int64_t>& shape,
                                 at::ScalarType dtype) const;
  bool Has(const std::string& name) const { return checkpoint_.Has(name); }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  at::Device device() const { return device_; }

 private:
  const Checkpoint& checkpoint_;
  at::Device device_;
};

// Parameters of a torch.nn.Linear, LayerNorm and the like.
struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out], or undefined
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
};

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
