#include "core/machine_limits.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
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

void MachineProbe::Free::operator()(float* p) const { std::free(p); }

MachineProbe::MachineProbe(ThreadPool* pool, size_t array_bytes)
    : pool_(pool), n_(array_bytes / sizeof(float)), a_(alloc_array(n_)), b_(alloc_array(n_)), c_(alloc_array(n_)) {
  DEEPMOE_CHECK(n_ > 0, "STREAM arrays must not be empty");
  float *a = a_.get(), *b = b_.get(), *c = c_.get();
  // First touch from the threads that will stream each chunk, so pages land near them.
  parallel_for(pool_, int64_t(n_), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
  });
}

double MachineProbe::stream_triad_gbps(int repeats) {
  const float s = 3.0f;
  double best = 1e30;
  for (int r = 0; r < std::max(repeats, 1); ++r) {
    double t0 = now_seconds();
    parallel_for(pool_, int64_t(n_), [&](int64_t lo, int64_t hi) {
      float* __restrict pa = a_.get();
      const float* __restrict pb = b_.get();
      const float* __restrict pc = c_.get();
      for (int64_t i = lo; i < hi; ++i) pa[i] = pb[i] + s * pc[i];
    });
    best = std::min(best, now_seconds() - t0);
  }
  if (a_.get()[n_ / 2] != 7.0f) throw Error("STREAM triad produced a wrong value");
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
  // Every thread runs FMA chains in short bursts for the same window of time, and the peak is all their work over
  // that window. A core slowed by other work then lowers only its own share (with a fixed amount of work per
  // thread, the slowest one would set the pace for all), and threads that could not run at the same time (more
  // threads than free cores) do not each count a whole core.
  constexpr int64_t kBurst = 20'000;                 // iterations between clock checks, ~40 µs
  constexpr double kWindowSeconds = 0.03;
  const int workers = pool ? pool->size() : 1;
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    std::vector<double> flops(size_t(workers), 0.0);
    std::atomic<int> ready{0};
    std::atomic<double> start{0.0};
    const auto one = [&](int64_t t) {
      // All threads start together: the last to arrive sets the window.
      if (ready.fetch_add(1) + 1 == workers) start.store(now_seconds());
      while (start.load() == 0.0) std::this_thread::yield();
      const double end = start.load() + kWindowSeconds;
      double done = 0;
      do done += fma_flops_one_thread(kBurst);
      while (now_seconds() < end);
      flops[size_t(t)] = done;
    };
    if (pool) pool->run(workers, [&](int64_t t, int) { one(t); });
    else one(0);
    const double span = now_seconds() - start.load();
    double total = 0;
    for (double f : flops) total += f;
    best = std::max(best, total / span / 1e9);
  }
  return best;
}

MachineLimits measure_machine_limits(ThreadPool* pool) { return MachineProbe(pool).measure(); }

}  // namespace deepmoe
