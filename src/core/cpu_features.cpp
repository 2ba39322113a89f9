#include "core/cpu_features.h"

#include <cpuid.h>

#include <cstdlib>
#include <cstring>

namespace deepmoe {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
#if defined(__clang__)
  // clang (14) has no "f16c" for __builtin_cpu_supports: CPUID leaf 1, ECX bit 29 (needed for the fuzz build).
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  f.f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29));
#else
  f.f16c = __builtin_cpu_supports("f16c");
#endif
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  IsaLevel hw = IsaLevel::Scalar;
  if (f.avx2 && f.fma && f.f16c) hw = IsaLevel::Avx2;
  if (hw == IsaLevel::Avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) hw = IsaLevel::Avx512;
  IsaLevel cap = IsaLevel::Avx512;
  if (const char* env = std::getenv("DEEPMOE_ISA")) {
    if (std::strcmp(env, "scalar") == 0) cap = IsaLevel::Scalar;
    else if (std::strcmp(env, "avx2") == 0) cap = IsaLevel::Avx2;
  }
  f.level = hw < cap ? hw : cap;
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();  // immutable after first use
  return features;
}

const char* isa_level_name(IsaLevel level) {
  switch (level) {
    case IsaLevel::Scalar: return "scalar";
    case IsaLevel::Avx2: return "avx2";
    case IsaLevel::Avx512: return "avx512";
  }
  return "?";
}

}  // namespace deepmoe
