// Helpers for parity tests that run the model through its internal (ATen)
// interfaces: reference inputs in, our tensors out to the comparison helpers.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "engine/model/image_encoder.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"

namespace blip2::testing {

// A tensor as float32 values on the host, for CheckTensor.
inline engine::HostTensor ToHost(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
  return {std::vector<int64_t>(c.sizes().begin(), c.sizes().end()),
          std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel())};
}

}  // namespace blip2::testing
