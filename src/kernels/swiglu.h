// SwiGLU gating of the DeepSeek MLP / experts (reference §1.7: w2(silu(w1(x)) * w3(x))): out = silu(gate) · up,
// silu(g) = g / (1 + e^-g). Element-wise, so trivially batch invariant.
#pragma once

#include <cstdint>

namespace deepmoe {

// out may alias gate or up.
void swiglu(const float* gate, const float* up, int64_t n, float* out);
void swiglu_ref(const float* gate, const float* up, int64_t n, float* out);  // FP64 math

}  // namespace deepmoe
