// AVX2 inner loops of the attention cores (attention.cpp). They evaluate exactly the baseline's arithmetic — eight
// lane accumulators in increasing index, the same reduction tree, multiply and add kept separate — so results are
// bitwise identical on every ISA. Call only when cpu_features().level >= IsaLevel::Avx2.
#pragma once

namespace deepmoe::attention_detail {

// Σ a[i]·b[i]: lane j accumulates i ≡ j (mod 8) for i < n − n%8, summed ((0+1)+(2+3))+((4+5)+(6+7)), then the
// tail i ≥ n − n%8 is added in order to a separate sum that is added last.
float dot_avx2(const float* a, const float* b, int n);
// y[i] += alpha · x[i]
void axpy_avx2(float alpha, const float* x, float* y, int n);

}  // namespace deepmoe::attention_detail
