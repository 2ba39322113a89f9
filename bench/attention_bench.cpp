// The absorbed MLA attention core at V2-Lite / V3 widths (16 heads, latent 512, rope 64), one thread: the last 64
// queries of a causal prefill over contexts of 1k, 4k and 16k rows (or those given), each run between two FMA-peak
// loops on the same thread. Both are timed in the thread's CPU time, so a machine shared with other work (which
// takes the core away, not the cycles of the ones we get) still gives the core's own rate; one JSON line per run:
// GFLOP per CPU-second and its fraction of the FMA peak, and the time per query.
//
// usage: attention_bench [--bf16] [CONTEXT ...]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/machine_limits_simd.h"
#include "kernels/attention.h"

using namespace deepmoe;

namespace {

double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// The best of three FMA loops, GFLOP per CPU-second (FP32, multiply-add counted as 2).
double fma_peak() {
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const double t0 = cpu_seconds();
    const double flops = cpu_features().level >= IsaLevel::Avx512 ? simd::avx512_fma_flops(20000000)
                         : cpu_features().level >= IsaLevel::Avx2 ? simd::avx2_fma_flops(20000000)
                                                                  : 0.0;
    const double t = cpu_seconds() - t0;
    if (flops / t > best) best = flops / t;
  }
  return best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  bool bf16 = false;
  std::vector<int64_t> contexts;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bf16") == 0) {
      bf16 = true;
    } else {
      const int64_t c = std::atoll(argv[i]);
      if (c < 64) {
        std::fprintf(stderr, "attention_bench: a context must be at least 64 rows, got '%s'\n", argv[i]);
        return 2;
      }
      contexts.push_back(c);
    }
  }
  if (contexts.empty()) contexts = {1024, 4096, 16384};
  if (cpu_features().level < IsaLevel::Avx2) {
    std::fprintf(stderr, "attention_bench: needs AVX2 or AVX-512 for the FMA-peak loop\n");
    return 2;
  }
  const int H = 16, C = 512, R = 64;
  const int64_t n_q = 64, row = C + R;
  for (const int64_t ctx : contexts) {
    std::mt19937 gen(1);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> q_lat(size_t(n_q * H * C)), q_rope(size_t(n_q * H * R)), cache(size_t(ctx * row)),
        out(size_t(n_q * H * C));
    for (float& x : q_lat) x = u(gen);
    for (float& x : q_rope) x = u(gen);
    for (float& x : cache) x = u(gen);
    std::vector<uint16_t> cache16(cache.size());
    convert_f32_to_bf16(cache.data(), cache16.data(), cache.size());
    std::vector<int64_t> visible(static_cast<size_t>(n_q));
    double pairs = 0;
    for (int64_t i = 0; i < n_q; ++i) pairs += double(visible[size_t(i)] = ctx - n_q + i + 1);
    const double flops = 2.0 * pairs * H * (2.0 * C + R);
    AbsorbedAttentionArgs a{q_lat.data(), q_rope.data(), bf16 ? static_cast<const void*>(cache16.data()) : cache.data(),
                            bf16 ? DType::BF16 : DType::F32, row, out.data(), n_q, ctx, H, C, R, visible.data(),
                            0.05f};
    for (int run = 0; run < 3; ++run) {
      const double peak_before = fma_peak();
      const double t0 = cpu_seconds();
      attention_absorbed(a, nullptr);
      const double t = cpu_seconds() - t0;
      const double peak = (peak_before + fma_peak()) / 2;
      std::printf("{\"case\":\"attention_absorbed\",\"cache\":\"%s\",\"context\":%lld,\"queries\":%lld,\"run\":%d,"
                  "\"gflops_per_cpu_second\":%.2f,\"fma_peak_gflops_per_cpu_second\":%.1f,"
                  "\"fraction_of_fma_peak\":%.4f,\"ms_per_query\":%.4f}\n",
                  bf16 ? "bf16" : "f32", (long long)ctx, (long long)n_q, run + 1, flops / t / 1e9, peak,
                  flops / t / 1e9 / peak, t / double(n_q) * 1e3);
    }
  }
  return 0;
}
