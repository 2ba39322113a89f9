// Twelve independent FMA chains: enough to cover FMA latency (4 cycles) on two FMA ports.
#include <immintrin.h>

#include <cstdlib>

#include "core/machine_limits_simd.h"

namespace deepmoe::simd {

double avx512_fma_flops(int64_t iterations) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(1.0f + float(i) * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = _mm512_add_ps(sum, acc[i]);
  float lanes[16];
  _mm512_storeu_ps(lanes, sum);
  if (lanes[0] == 12345.0f) std::abort();  // keeps the chains alive
  return double(iterations) * 12 * 16 * 2;
}

}  // namespace deepmoe::simd
