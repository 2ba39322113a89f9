// Top-k selection used by the MoE gate (reference §1.6). Deterministic: results are ordered by value descending,
// ties go to the lower index, and NaN ranks below every number, so the choice never depends on the batch.
#pragma once

#include <cstdint>

namespace deepmoe {

// Writes the k largest of x[0..n) (k <= n) to indices[0..k) and, when values != nullptr, values[0..k).
void topk(const float* x, int n, int k, int* indices, float* values = nullptr);
// The specification: k passes of "take the largest remaining, lowest index on ties".
void topk_ref(const float* x, int n, int k, int* indices, float* values = nullptr);

}  // namespace deepmoe
