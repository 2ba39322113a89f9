#include "core/machine_limits.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/machine_limits_simd.h"
#include "core/thread_pool.h"

namespace deepmoe {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

float* alloc_array(size_t n) {
  auto* p = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
  if (!p) throw Error("out of memory for the STREAM arrays");
  return p;
}

// Scalar FMA chains for CPUs without AVX2 (the compiler vectorizes to SSE at best).
double scalar_fma_flops(int64_t iterations) {
  float acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = 1.0f + i * 1e-3f;
  const float m = 0.999999f, a = 1e-7f;
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < 16; ++i) acc[i] = acc[i] * m + a;
  float sink = 0;
  for (float v : acc) sink += v;
  if (sink == 12345.0f) std::abort();  // keeps the loop alive
  return double(iterations) * 16 * 2;
}

double fma_flops_one_thread(int64_t iterations) {
  switch (cpu_features().level) {
    case IsaLevel::Avx512: return simd::avx512_fma_flops(iterations);
    case IsaLevel::Avx2: return simd::avx2_fma_flops(iterations);
    default: return scalar_fma_flops(iterations);
  }
}

}  // namespace

MachineProbe::MachineProbe(ThreadPool* pool, size_t array_bytes) : pool_(pool), n_(array_bytes / sizeof(float)) {
  DEEPMOE_CHECK(n_ > 0, "STREAM arrays must not be empty");
  a_ = alloc_array(n_);
  b_ = alloc_array(n_);
  c_ = alloc_array(n_);
  // First touch from the threads that will stream each chunk, so pages land near them.
  parallel_for(pool_, int64_t(n_), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) a_[i] = 0.0f, b_[i] = 1.0f, c_[i] = 2.0f;
  });
}

MachineProbe::~MachineProbe() {
  std::free(a_);
  std::free(b_);
  std::free(c_);
}

double MachineProbe::stream_triad_gbps(int repeats) {
  const float s = 3.0f;
  double best = 1e30;
  for (int r = 0; r < std::max(repeats, 1); ++r) {
    double t0 = now_seconds();
    parallel_for(pool_, int64_t(n_), [&](int64_t lo, int64_t hi) {
      float* __restrict pa = a_;
      const float* __restrict pb = b_;
      const float* __restrict pc = c_;
      for (int64_t i = lo; i < hi; ++i) pa[i] = pb[i] + s * pc[i];
    });
    best = std::min(best, now_seconds() - t0);
  }
  if (a_[n_ / 2] != 7.0f) throw Error("STREAM triad produced a wrong value");
  return 3.0 * double(n_) * sizeof(float) / best / 1e9;
}

MachineLimits MachineProbe::measure(int repeats) {
  MachineLimits m;
  m.threads = pool_ ? pool_->size() : 1;
  m.stream_triad_gbps = stream_triad_gbps(repeats);
  m.fma_peak_gflops = measure_fma_peak_gflops(pool_);
  m.isa = isa_level_name(cpu_features().level);
  return m;
}

double measure_stream_triad_gbps(ThreadPool* pool, size_t array_bytes, int repeats) {
  return MachineProbe(pool, array_bytes).stream_triad_gbps(repeats);
}

double measure_fma_peak_gflops(ThreadPool* pool) {
  const int64_t iterations = 4'000'000;
  int workers = pool ? pool->size() : 1;
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    std::vector<double> rate(size_t(workers), 0.0);
    const auto one = [&](int64_t t) {
      const double t0 = now_seconds();
      const double flops = fma_flops_one_thread(iterations);
      rate[size_t(t)] = flops / (now_seconds() - t0);
    };
    if (pool) pool->run(workers, [&](int64_t t, int) { one(t); });
    else one(0);
    double total = 0;
    for (double f : rate) total += f;
    best = std::max(best, total / 1e9);
  }
  return best;
}

MachineLimits measure_machine_limits(ThreadPool* pool) { return MachineProbe(pool).measure(); }

}  // namespace deepmoe
