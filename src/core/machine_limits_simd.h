// FMA-throughput loops per ISA (machine_limits_avx2.cpp / machine_limits_avx512.cpp). Each returns the flops it
// executed; call only at the matching cpu_features().level.
#pragma once

#include <cstdint>

namespace deepmoe::simd {
double avx2_fma_flops(int64_t iterations);
double avx512_fma_flops(int64_t iterations);
}  // namespace deepmoe::simd
