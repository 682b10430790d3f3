// Products with int8 weights for the few rows a decode step or a caption's
// prefill has, on CPUs with AVX2 and FMA. LibTorch's weight-only int8 matmul
// (at::_weight_int8pack_mm) was measured on an AVX2 machine at 1.1 GB/s of
// weights with float32 inputs and 0.8 with float16 (8.3 with bfloat16, 3.3 at
// eight rows), against the 18 GB/s the memory streams (docs/performance.md,
// "int8 kernel"); this kernel reads the weights once per tile of up to eight
// rows and converts them in registers. Raw pointers, no LibTorch: the caller
// (Linear in weights.cc) checks shapes and dtypes.
#pragma once

#include <cstdint>

namespace blip2::engine::cpu {

// Whether this CPU runs Int8GemvAvx2 (AVX2 and FMA).
bool HasAvx2Fma();

// y[r][o] = scales[o] * sum_i x[r][i] * w[o][i] for every row r < m and every
// output o in [n_begin, n_end); x is [m, k] float32, w [n, k] int8, y [m, n]
// float32, all row-major. Each output is summed in one fixed order, whatever
// range a thread is given.
void Int8GemvAvx2(const float* x, int64_t m, int64_t k, const int8_t* w, const float* scales, float* y, int64_t n,
                  int64_t n_begin, int64_t n_end);

}  // namespace blip2::engine::cpu
