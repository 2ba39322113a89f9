// AVX-512 inner loops of the absorbed attention core (attention.cpp). They evaluate exactly the arithmetic of
// attention_avx2.h's loops — per output the same lanes in the same order, the same reduction tree, multiply and add
// kept separate — so results stay bitwise identical on every ISA; they only do more of it per instruction. Call
// only when cpu_features().level >= IsaLevel::Avx512.
#pragma once

#include <cstdint>

#include "kernels/attention.h"

namespace deepmoe::attention_detail {

// The heads' q repacked in pairs for dot_heads_rows_packed_avx512: per 8-wide chunk of the first n values and pair,
// [head 2p lanes | head 2p + 1 lanes] (zero for a missing odd head); qp holds dot_heads_scratch_floats(n) floats.
void pack_head_pairs_avx512(const float* q, int64_t q_stride, int nh, int n, float* qp);
constexpr int64_t dot_heads_scratch_floats(int n) { return 8 * int64_t(n); }

// out[h · out_stride + r] = dot_avx2(q + h · q_stride, row_{row0 + r} + col0, n) for h < nh ≤ 8 and r < n_rows,
// where row_t is row t of `cache` (F32 or BF16, contiguous or paged) and qp is q packed by pack_head_pairs_avx512.
// Two heads' 8 lanes share a register and four cache rows are taken per pass, so each q load serves four rows
// and each row load eight heads.
void dot_heads_rows_packed_avx512(const float* q, int64_t q_stride, const float* qp, int nh, const CacheRowView& cache,
                                  int64_t col0, int64_t row0, int64_t n_rows, int n, float* out, int64_t out_stride);

// The scores attention.cpp computes from those dots when both widths are multiples of 8 (no tails):
// out[h · out_stride + r] = (dot(q_lat_h, latent of row_{row0 + r}) + dot(q_rope_h, rope key of the row)) · scale
// for h < nh ≤ 8, r < n_rows, each dot exactly dot_heads_rows_packed_avx512's (qp_lat, qp_rope: the heads' latent
// and rope queries packed by pack_head_pairs_avx512), in one pass over the rows and without the intermediate
// arrays.
void scores_rows_packed_avx512(const float* qp_lat, const float* qp_rope, int nh, const CacheRowView& cache,
                               int latent_dim, int rope_dim, int64_t row0, int64_t n_rows, float scale, float* out,
                               int64_t out_stride);

// attention.cpp's softmax_inplace on rows s + h · stride, each n long, for h < nh ≤ 8: the same maximum, the same
// std::exp of each score minus it, each row's sum in increasing index, the same reciprocal and products.
void softmax_heads_avx512(float* s, int64_t stride, int nh, int64_t n);

// weighted_rows_avx2 (attention_avx2.h) over the rows [row0, row1) only, 32 columns per pass: from zero when
// `first`, otherwise continuing the partial sums already in out (the previous rows' call). Calls over consecutive
// row ranges give exactly weighted_rows_avx2's sums over their union.
void weighted_rows_range_avx512(const float* p, int64_t p_stride, int nh, const CacheRowView& cache, int64_t row0,
                                int64_t row1, int dim, float* out, int64_t out_stride, bool first);

}  // namespace deepmoe::attention_detail
