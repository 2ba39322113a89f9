// RMSNorm in FP32 (reference §1.3: model.py's PR #969 computes it in fp32; DESIGN.md §3):
//   y[r, :] = weight ⊙ x[r, :] · 1/sqrt(mean(x[r, :]²) + eps)
// Each row is reduced in a fixed order that does not depend on how many rows there are (batch invariance).
#pragma once

#include <cstdint>

namespace deepmoe {

class ThreadPool;

// x and y are [rows, dim] with row strides in elements; y may alias x (in place).
void rmsnorm(const float* x, int64_t x_stride, const float* weight, int64_t rows, int64_t dim, float eps, float* y,
             int64_t y_stride, ThreadPool* pool = nullptr);
// The specification: a plain loop with an FP64 sum of squares.
void rmsnorm_ref(const float* x, int64_t x_stride, const float* weight, int64_t rows, int64_t dim, float eps,
                 float* y, int64_t y_stride);

}  // namespace deepmoe
