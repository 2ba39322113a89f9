// The final lane tree of gemm.h in AVX-512 registers, shared by the AVX-512 GEMM files. Include only from files
// built for AVX-512 (the functions are static: each file keeps its own copy, built for its own ISA flags).
#pragma once

#include <immintrin.h>

namespace deepmoe::gemm_detail {

// The tree of gemm.h: (l, l+8), then +4, +2, +1.
__attribute__((always_inline)) static inline float sum_lanes16(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

// The same tree for four outputs at once (acc[0..3]), into out[0..3]: each step adds the same lane pairs as
// sum_lanes16, with the outputs side by side in the register.
__attribute__((always_inline)) static inline void reduce4(const __m512* acc, float* out) {
  // + l+8: [A.lo + A.hi | B.lo + B.hi] and [C.lo + C.hi | D.lo + D.hi]
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(acc[0], acc[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(acc[0], acc[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2], acc[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(acc[2], acc[3], _MM_SHUFFLE(3, 2, 3, 2)));
  // + l+4: quarter q holds output q's four partial lanes
  const __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
  // + l+2, then + l+1: lane 0 of each quarter
  const __m512 w = _mm512_add_ps(v, _mm512_shuffle_ps(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512 x = _mm512_add_ps(w, _mm512_shuffle_ps(w, w, _MM_SHUFFLE(2, 3, 0, 1)));
  _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0,
                                                                                    0, 0, 0, 0, 0, 0), x)));
}

}  // namespace deepmoe::gemm_detail
