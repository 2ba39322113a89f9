// Row softmax in FP32 with the max subtracted first (model.py computes attention and gate softmax in fp32).
// Each row is reduced in one fixed order (batch invariance).
#pragma once

#include <cstdint>

namespace deepmoe {

// In place over x[rows, n] with row stride `stride`. A row whose entries are all -inf becomes all zeros.
void softmax_rows(float* x, int64_t rows, int64_t n, int64_t stride);
void softmax_rows_ref(float* x, int64_t rows, int64_t n, int64_t stride);  // FP64 math

}  // namespace deepmoe
