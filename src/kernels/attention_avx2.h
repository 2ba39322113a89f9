// AVX2 inner loops of the attention cores (attention.cpp). They evaluate exactly the baseline's arithmetic — eight
// lane accumulators in increasing index, the same reduction tree, multiply and add kept separate — so results are
// bitwise identical on every ISA. Call only when cpu_features().level >= IsaLevel::Avx2.
#pragma once

#include <cstdint>

#include "kernels/attention.h"

namespace deepmoe::attention_detail {

// Σ a[i]·b[i]: lane j accumulates i ≡ j (mod 8) for i < n − n%8, summed ((0+1)+(2+3))+((4+5)+(6+7)), then the
// tail i ≥ n − n%8 is added in order to a separate sum that is added last.
float dot_avx2(const float* a, const float* b, int n);
// y[i] += alpha · x[i]
void axpy_avx2(float alpha, const float* x, float* y, int n);
// softmax_row_f32 (kernels/exp_f32.h) built for this level: its fused multiply-adds are single instructions.
void softmax_row_avx2(float* s, int64_t n);

// The absorbed attention's two loops over the context, for nh ≤ 8 heads at once so that their chains overlap
// (one dot at a time waits on each add's latency). Each head's arithmetic is exactly dot_avx2's / axpy_avx2's.
//
// out[h] = dot_avx2(q + h · q_stride, c, n) for h < nh.
void dot_heads_avx2(const float* q, int64_t q_stride, int nh, const float* c, int n, float* out);
// For h < nh: out[h · out_stride + d] = Σ_t p[h · p_stride + t] · row_t[d] for d < dim and t < n, summed from
// zero in increasing t as by axpy_avx2, where row_t is row t of `cache` (F32 or BF16, contiguous or paged).
void weighted_rows_avx2(const float* p, int64_t p_stride, int nh, const CacheRowView& cache, int64_t n, int dim,
                        float* out, int64_t out_stride);

}  // namespace deepmoe::attention_detail
