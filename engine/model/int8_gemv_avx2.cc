// Compiled with -mavx2 -mfma (engine/CMakeLists.txt) and called only after a
// run-time check that the CPU has both (Linear in weights.cc). Plain C++ on raw
// pointers: no LibTorch or standard-library templates here, whose inline
// copies compiled for AVX2 could be picked by the linker for other callers.
#include <immintrin.h>

#include <cstdint>

#include "engine/model/int8_gemv.h"

namespace blip2::engine::cpu {
namespace {

float HorizontalSum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Eight int8 weights as eight floats.
__m256 LoadWeights(const int8_t* w) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
}

// Rows [0, MT) of x against weight rows [n_begin, n_end). U independent
// accumulators per row hide the FMA latency when MT is small; every output is
// summed in the same order whatever the thread split, so results do not
// depend on the thread count.
template <int MT, int U>
void Tile(const float* x, int64_t k, const int8_t* w, const float* scales, float* y, int64_t n, int64_t n_begin,
          int64_t n_end) {
  constexpr int64_t kStep = 8 * U;
  const int64_t k_main = k / kStep * kStep;
  for (int64_t o = n_begin; o < n_end; ++o) {
    const int8_t* row = w + o * k;
    // The loops over m and u are unrolled so that the accumulators live in
    // registers (left rolled, GCC keeps the array on the stack: a load and a
    // store per multiply-add).
    __m256 acc[MT][U];
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) acc[m][u] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < k_main; i += kStep) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        const __m256 wf = LoadWeights(row + i + 8 * u);
#pragma GCC unroll 8
        for (int m = 0; m < MT; ++m) {
          acc[m][u] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * k + i + 8 * u), wf, acc[m][u]);
        }
      }
    }
    for (int m = 0; m < MT; ++m) {
      for (int u = 1; u < U; ++u) acc[m][0] = _mm256_add_ps(acc[m][0], acc[m][u]);
      float sum = HorizontalSum(acc[m][0]);
      for (int64_t i = k_main; i < k; ++i) sum += x[m * k + i] * static_cast<float>(row[i]);
      y[m * n + o] = sum * scales[o];
    }
  }
}

}  // namespace

void Int8GemvAvx2(const float* x, int64_t m, int64_t k, const int8_t* w, const float* scales, float* y, int64_t n,
                  int64_t n_begin, int64_t n_end) {
  // Rows of x in tiles of up to eight: each tile reads the weights once.
  for (int64_t r = 0; r < m;) {
    const int64_t left = m - r;
    const float* xr = x + r * k;
    float* yr = y + r * n;
    if (left >= 8) {
      Tile<8, 1>(xr, k, w, scales, yr, n, n_begin, n_end);
      r += 8;
    } else if (left >= 4) {
      Tile<4, 1>(xr, k, w, scales, yr, n, n_begin, n_end);
      r += 4;
    } else if (left >= 2) {
      Tile<2, 2>(xr, k, w, scales, yr, n, n_begin, n_end);
      r += 2;
    } else {
      Tile<1, 4>(xr, k, w, scales, yr, n, n_begin, n_end);
      r += 1;
    }
  }
}

}  // namespace blip2::engine::cpu
