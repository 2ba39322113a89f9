// Runtime CPU detection. Kernels built for wider ISAs are entered only when these say the CPU has them.
// DEEPMOE_ISA=scalar|avx2|avx512 in the environment caps the level (to test every path on one machine).
#pragma once

namespace deepmoe {

enum class IsaLevel { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512bf16 = false;
  bool avx512vbmi = false;
  IsaLevel level = IsaLevel::Scalar;  // highest level both present and allowed by DEEPMOE_ISA
};

const CpuFeatures& cpu_features();
const char* isa_level_name(IsaLevel level);

}  // namespace deepmoe
