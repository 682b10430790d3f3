#include "engine/model/weights.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/torch_util.h"

namespace blip2::engine {

absl::StatusOr<at::Tensor> WeightLoader::Get(const std::string& name, const std::vector<int64_t>& shape,
                                             at::ScalarType dtype) const {
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
  return ToTensor(view, dtype, device_);
}

absl::StatusOr<Linear> LoadLinear(const WeightLoader& w, const std::string& prefix, int64_t in, int64_t out,
                                  at::ScalarType dtype, bool has_bias) {
  Linear linear;
  ASSIGN_OR_RETURN(linear.weight, w.Get(prefix + ".weight", {out, in}, dtype));
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
