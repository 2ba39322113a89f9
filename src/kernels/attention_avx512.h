// AVX-512 inner loops of the absorbed attention core (attention.cpp). They evaluate exactly the arithmetic of
// attention_avx2.h's loops — per output the same lanes in the same order, the same reduction tree, multiply and add
// kept separate — so results stay bitwise identical on every ISA; they only do more of it per instruction. Call
// only when cpu_features().level >= IsaLevel::Avx512.
#pragma once

#include <cstdint>

#include "kernels/attention.h"

namespace deepmoe::attention_detail {

// out[h · out_stride + t] = dot_avx2(q + h · q_stride, row_t + col0, n) for h < nh ≤ 8 and t < n_rows, where row_t
// is row t of `cache` (F32 or BF16, contiguous or paged). Two heads' 8 lanes share a register and three cache rows
// are taken per pass, so each q load serves three rows and each row load eight heads. `scratch` holds the heads' q
// repacked in pairs: at least dot_heads_scratch_floats(n) floats.
void dot_heads_rows_avx512(const float* q, int64_t q_stride, int nh, const CacheRowView& cache, int64_t col0,
                           int64_t n_rows, int n, float* out, int64_t out_stride, float* scratch);
constexpr int64_t dot_heads_scratch_floats(int n) { return 8 * int64_t(n); }

// weighted_rows_avx2 (attention_avx2.h), 32 columns per pass.
void weighted_rows_avx512(const float* p, int64_t p_stride, int nh, const CacheRowView& cache, int64_t n, int dim,
                          float* out, int64_t out_stride);

}  // namespace deepmoe::attention_detail
