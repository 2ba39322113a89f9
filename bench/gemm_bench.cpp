// FP8 kernel benchmark: GEMV (M = 1) weight bandwidth as a fraction of STREAM, GEMM (M = 512, 2048)
// FLOP/s as a fraction of FMA peak, and quantize_act throughput, on DeepSeek-V3 / V2-Lite projection shapes. The
// machine (STREAM triad, FP32 FMA peak; 1 thread and all threads) is measured right before each shape's GEMV and
// GEMM cases, and their fractions use those numbers. One JSON line per case.
//
// usage: gemm_bench [--threads N] [--quick] [--decode-batch] [--prefill-moe [--repeats R]]   (--quick: the first two shapes only, M = 512 only)
// GEMV rotates through weight copies larger than the last-level cache, so its bytes come from memory.
// --decode-batch: instead, the products of a batched decode step on the V2-Lite shape at B = 1, 4, 8, 16, 32
// tokens — the BF16 lm_head (129280 × 2048) at M = B, and one MoE layer's routed experts (64 × gate, up, down)
// as grouped GEMMs over a fixed top-6 routing of B tokens — each as time per call and its fraction of STREAM
// (bytes read) and of the FP32 FMA peak (FLOPs; the BF16 dot product's peak is twice that), in w8a32 and w8a16.
// --prefill-moe: instead, the products of a 512-token prefill on the Moonlight shape that do not run at the rate
// of the dense ones — one MoE layer's routed experts (64 × gate, up, down, top-6 over a skewed routing, as
// grouped GEMMs) and MLA's per-head W_UK (K = 128) and W_UV over 16 heads — and the q projection as the dense
// reference, each as time per call and its fraction of the FP32 FMA peak (all threads), in w8a16.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <sys/mman.h>

#include "core/buffer_cache.h"
#include "core/cpu_features.h"
#include "core/machine_limits.h"
#include "core/thread_pool.h"
#include "kernels/gemm.h"
#include "kernels/quantize.h"

using namespace deepmoe;

namespace {

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double load_average() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

// Best wall time of several runs (after one warm-up), running for at least min_seconds in total; also the mean
// process CPU seconds per run, which a machine shared with other work inflates less than wall time.
struct Timing {
  double best_s, cpu_s;
};
Timing best_seconds(const std::function<void()>& fn, double min_seconds = 0.5, int max_runs = 50) {
  fn();
  double best = 1e30, total = 0;
  const double cpu0 = process_cpu_seconds();
  int runs = 0;
  for (; runs < max_runs && (runs < 2 || total < min_seconds); ++runs) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    total += s;
  }
  return {best, (process_cpu_seconds() - cpu0) / runs};
}

// Weight bytes in memory advised for huge pages, as the engine maps checkpoints (core/mapped_file.cpp): the GEMV
// numbers then describe the product's weights, not 4 KB pages that a checkpoint does not use.
class HugePageBytes {
 public:
  explicit HugePageBytes(size_t n) : size_((n + kHuge - 1) / kHuge * kHuge) {
    void* p = mmap(nullptr, size_ + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    base_ = static_cast<uint8_t*>(p);
    data_ = base_ + (kHuge - reinterpret_cast<uintptr_t>(base_) % kHuge) % kHuge;
    huge_ = madvise(data_, size_, MADV_HUGEPAGE) == 0;
  }
  ~HugePageBytes() { munmap(base_, size_ + kHuge); }
  HugePageBytes(const HugePageBytes&) = delete;
  HugePageBytes& operator=(const HugePageBytes&) = delete;
  uint8_t* data() { return data_; }
  bool huge() const { return huge_; }

 private:
  static constexpr size_t kHuge = size_t(2) << 20;
  size_t size_;
  uint8_t* base_ = nullptr;
  uint8_t* data_ = nullptr;
  bool huge_ = false;
};

struct Fp8Weight {
  std::unique_ptr<HugePageBytes> q;
  std::vector<float> scale_inv;
  WeightMatrix view;
};

Fp8Weight random_fp8_weight(int64_t n, int64_t k, uint64_t seed);

struct Bf16Weight {
  std::unique_ptr<HugePageBytes> q;
  WeightMatrix view;
};

Bf16Weight random_bf16_weight(int64_t n, int64_t k, uint64_t seed) {
  Bf16Weight w;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  w.q = std::make_unique<HugePageBytes>(size_t(n * k) * 2);
  auto* q = reinterpret_cast<uint16_t*>(w.q->data());
  for (int64_t i = 0; i < n * k; ++i) q[i] = f32_to_bf16(normal(rng));
  w.view = {DType::BF16, n, k, q, nullptr};
  return w;
}

Fp8Weight random_fp8_weight(int64_t n, int64_t k, uint64_t seed) {
  Fp8Weight w;
  std::mt19937_64 rng(seed);
  const size_t count = size_t(n * k);
  w.q = std::make_unique<HugePageBytes>(count);
  uint8_t* q = w.q->data();
  for (size_t i = 0; i < count; i += 8) {
    uint64_t r = rng();
    for (size_t b = 0; b < 8 && i + b < count; ++b) {
      uint8_t code = uint8_t(r >> (8 * b));
      q[i + b] = (code & 0x7F) == 0x7F ? uint8_t(code & 0xF0) : code;  // no NaN codes
    }
  }
  w.scale_inv.assign(size_t(quant_blocks(n) * quant_blocks(k)), 1.0f / 4096);
  w.view = {DType::F8_E4M3, n, k, q, w.scale_inv.data()};
  return w;
}

// The products of one decode step at batch B on the V2-Lite bench shape (see the usage note above).
void decode_batch_cases(ThreadPool& pool, const std::function<void(const char*)>& measure_machine,
                        const MachineLimits& all) {
  constexpr int64_t kHidden = 2048, kVocab = 129280, kInter = 1408, kExperts = 64, kTopK = 6;
  const Bf16Weight head = random_bf16_weight(kVocab, kHidden, 11);
  const Fp8Weight dense = random_fp8_weight(10944, kHidden, 12);
  std::vector<Fp8Weight> gate, up, down;
  for (int64_t e = 0; e < kExperts; ++e) {
    gate.push_back(random_fp8_weight(kInter, kHidden, uint64_t(3 * e + 1)));
    up.push_back(random_fp8_weight(kInter, kHidden, uint64_t(3 * e + 2)));
    down.push_back(random_fp8_weight(kHidden, kInter, uint64_t(3 * e + 3)));
  }
  std::vector<WeightMatrix> gate_v, up_v, down_v;
  for (int64_t e = 0; e < kExperts; ++e) {
    gate_v.push_back(gate[size_t(e)].view);
    up_v.push_back(up[size_t(e)].view);
    down_v.push_back(down[size_t(e)].view);
  }
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  measure_machine("decode batch");
  for (int64_t b : {1, 4, 8, 16, 32}) {
    CachedBytes x_bytes, logits_bytes, xe_bytes, g_bytes, u_bytes, out_bytes;
    x_bytes.reset(size_t(b * kHidden) * sizeof(float));
    logits_bytes.reset(size_t(b * kVocab) * sizeof(float));
    float* x = reinterpret_cast<float*>(x_bytes.data());
    for (int64_t i = 0; i < b * kHidden; ++i) x[i] = normal(rng);
    const double dense_bytes = 10944.0 * double(kHidden), dense_flops = 2.0 * double(b) * dense_bytes;
    // Routing: each token picks kTopK distinct experts uniformly; rows sorted by expert (the dispatch's layout).
    std::vector<int64_t> count(size_t(kExperts), 0);
    for (int64_t t = 0; t < b; ++t) {
      std::vector<int64_t> picks;
      while (int64_t(picks.size()) < kTopK) {
        const int64_t e = int64_t(rng() % uint64_t(kExperts));
        if (std::find(picks.begin(), picks.end(), e) == picks.end()) picks.push_back(e);
      }
      for (int64_t e : picks) ++count[size_t(e)];
    }
    std::vector<int64_t> offsets(size_t(kExperts) + 1, 0);
    int64_t used = 0;
    for (int64_t e = 0; e < kExperts; ++e) {
      offsets[size_t(e) + 1] = offsets[size_t(e)] + count[size_t(e)];
      used += count[size_t(e)] > 0;
    }
    const int64_t rows = offsets.back();
    xe_bytes.reset(size_t(rows * kHidden) * sizeof(float));
    g_bytes.reset(size_t(rows * kInter) * sizeof(float));
    u_bytes.reset(size_t(rows * kInter) * sizeof(float));
    out_bytes.reset(size_t(rows * kHidden) * sizeof(float));
    float* xe = reinterpret_cast<float*>(xe_bytes.data());
    float* g = reinterpret_cast<float*>(g_bytes.data());
    float* u = reinterpret_cast<float*>(u_bytes.data());
    for (int64_t i = 0; i < rows * kHidden; ++i) xe[i] = normal(rng);
    const double head_bytes = 2.0 * double(kVocab) * double(kHidden), head_flops = 2.0 * double(b) * head_bytes / 2;
    const double expert_bytes = 3.0 * double(used) * double(kInter) * double(kHidden);
    const double expert_flops = 6.0 * double(rows) * double(kInter) * double(kHidden);
    for (GemmMode mode : {GemmMode::W8A32, GemmMode::W8A16}) {
      const Timing head_t = best_seconds(
          [&] { gemm(x, b, head.view, reinterpret_cast<float*>(logits_bytes.data()), mode, &pool); }, 1.0, 20);
      const Timing dense_t = best_seconds(
          [&] { gemm(x, b, dense.view, reinterpret_cast<float*>(logits_bytes.data()), mode, &pool); }, 0.5, 20);
      const Timing experts_t = best_seconds([&] {
        grouped_gemm(xe, offsets.data(), kExperts, gate_v.data(), g, mode, &pool);
        grouped_gemm(xe, offsets.data(), kExperts, up_v.data(), u, mode, &pool);
        grouped_gemm(g, offsets.data(), kExperts, down_v.data(), reinterpret_cast<float*>(out_bytes.data()), mode,
                     &pool);
      }, 1.0, 20);
      for (const auto& [name, t, bytes, flops, dtype] :
           {std::tuple{"lm_head_bf16", head_t, head_bytes, head_flops, DType::BF16},
            std::tuple{"dense_gate_fp8", dense_t, dense_bytes, dense_flops, DType::F8_E4M3},
            std::tuple{"routed_experts_layer", experts_t, expert_bytes, expert_flops, DType::F8_E4M3}})
        std::printf("{\"case\":\"decode_batch\",\"product\":\"%s\",\"mode\":\"%s\",\"bf16_dot\":%s,\"batch\":%lld,"
                    "\"experts_used\":%lld,\"ms\":%.3f,\"fraction_of_stream\":%.3f,\"fraction_of_fma_peak\":%.3f,"
                    "\"load_avg\":%.1f}\n",
                    name, gemm_mode_name(mode), gemm_uses_bf16_dot(mode, dtype) ? "true" : "false", (long long)b,
                    (long long)used, t.best_s * 1e3, bytes / t.best_s / 1e9 / all.stream_triad_gbps,
                    flops / t.best_s / 1e9 / all.fma_peak_gflops, load_average());
      std::fflush(stdout);
    }
  }
}

// The prefill products on the Moonlight shape at 512 tokens (see the usage note above).
void prefill_moe_cases(ThreadPool& pool, const std::function<void(const char*)>& measure_machine,
                       const MachineLimits& all, int repeats) {
  constexpr int64_t kTokens = 512, kHidden = 2048, kInter = 1408, kExperts = 64, kTopK = 6, kHeads = 16,
                    kLatent = 512, kHeadDim = 128;
  std::vector<Fp8Weight> gate, up, down, uk, uv;
  std::vector<WeightMatrix> gate_v, up_v, down_v, uk_v, uv_v;
  for (int64_t e = 0; e < kExperts; ++e) {
    gate.push_back(random_fp8_weight(kInter, kHidden, uint64_t(3 * e + 1)));
    up.push_back(random_fp8_weight(kInter, kHidden, uint64_t(3 * e + 2)));
    down.push_back(random_fp8_weight(kHidden, kInter, uint64_t(3 * e + 3)));
  }
  for (int64_t h = 0; h < kHeads; ++h) {
    uk.push_back(random_fp8_weight(kLatent, kHeadDim, uint64_t(1000 + h)));
    uv.push_back(random_fp8_weight(kHeadDim, kLatent, uint64_t(2000 + h)));
  }
  for (int64_t e = 0; e < kExperts; ++e) {
    gate_v.push_back(gate[size_t(e)].view);
    up_v.push_back(up[size_t(e)].view);
    down_v.push_back(down[size_t(e)].view);
  }
  for (int64_t h = 0; h < kHeads; ++h) {
    uk_v.push_back(uk[size_t(h)].view);
    uv_v.push_back(uv[size_t(h)].view);
  }
  const Fp8Weight q = random_fp8_weight(kHeads * 192, kHidden, 3000);
  // Routing: each token picks kTopK distinct experts with probability ∝ a fixed log-normal popularity, so the
  // experts get a spread of rows (a real router's are uneven too); rows sorted by expert (the dispatch's layout).
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<double> popularity(static_cast<size_t>(kExperts));
  for (double& p : popularity) p = std::exp(0.5 * normal(rng));
  std::vector<int64_t> count(size_t(kExperts), 0);
  for (int64_t t = 0; t < kTokens; ++t) {
    std::vector<double> left = popularity;
    for (int64_t pick = 0; pick < kTopK; ++pick) {
      std::discrete_distribution<int64_t> choose(left.begin(), left.end());
      const int64_t e = choose(rng);
      ++count[size_t(e)];
      left[size_t(e)] = 0;
    }
  }
  std::vector<int64_t> offsets(size_t(kExperts) + 1, 0);
  for (int64_t e = 0; e < kExperts; ++e) offsets[size_t(e) + 1] = offsets[size_t(e)] + count[size_t(e)];
  const int64_t rows = offsets.back();
  std::vector<int64_t> head_offsets(size_t(kHeads) + 1);
  for (int64_t h = 0; h <= kHeads; ++h) head_offsets[size_t(h)] = h * kTokens;
  CachedBytes xe_bytes, g_bytes, u_bytes, out_bytes, lat_bytes, head_bytes;
  xe_bytes.reset(size_t(rows * kHidden) * sizeof(float));
  g_bytes.reset(size_t(rows * kInter) * sizeof(float));
  u_bytes.reset(size_t(rows * kInter) * sizeof(float));
  out_bytes.reset(size_t(rows * kHidden) * sizeof(float));
  lat_bytes.reset(size_t(kHeads * kTokens * kLatent) * sizeof(float));
  head_bytes.reset(size_t(kHeads * kTokens * 192) * sizeof(float));
  float* xe = reinterpret_cast<float*>(xe_bytes.data());
  float* g = reinterpret_cast<float*>(g_bytes.data());
  float* u = reinterpret_cast<float*>(u_bytes.data());
  float* out = reinterpret_cast<float*>(out_bytes.data());
  float* lat = reinterpret_cast<float*>(lat_bytes.data());
  float* heads = reinterpret_cast<float*>(head_bytes.data());
  for (int64_t i = 0; i < rows * kHidden; ++i) xe[i] = normal(rng);
  for (int64_t i = 0; i < rows * kInter; ++i) g[i] = normal(rng);
  for (int64_t i = 0; i < kHeads * kTokens * kLatent; ++i) lat[i] = normal(rng);
  for (int64_t i = 0; i < kHeads * kTokens * kHeadDim; ++i) heads[i] = normal(rng);
  const auto [fewest, most] = std::minmax_element(count.begin(), count.end());
  const double expert_flops = 2.0 * double(rows) * double(kInter) * double(kHidden);
  const double head_flops = 2.0 * double(kHeads * kTokens) * double(kLatent) * double(kHeadDim);
  const GemmMode mode = GemmMode::W8A16;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    measure_machine("prefill moe");
    const std::tuple<const char*, double, std::function<void()>> cases[] = {
        {"routed_gate", expert_flops, [&] { grouped_gemm(xe, offsets.data(), kExperts, gate_v.data(), g, mode, &pool); }},
        {"routed_up", expert_flops, [&] { grouped_gemm(xe, offsets.data(), kExperts, up_v.data(), u, mode, &pool); }},
        {"routed_down", expert_flops,
         [&] { grouped_gemm(g, offsets.data(), kExperts, down_v.data(), out, mode, &pool); }},
        {"w_uk", head_flops,
         [&] { grouped_gemm(heads, head_offsets.data(), kHeads, uk_v.data(), lat, mode, &pool); }},
        {"w_uv", head_flops,
         [&] { grouped_gemm(lat, head_offsets.data(), kHeads, uv_v.data(), heads, mode, &pool); }},
        {"q_dense", 2.0 * double(kTokens) * double(q.view.n) * double(kHidden),
         [&] { gemm(xe, kTokens, q.view, heads, mode, &pool); }}};
    for (const auto& [name, flops, fn] : cases) {
      const Timing t = best_seconds(fn, 1.0, 20);
      std::printf("{\"case\":\"prefill_moe\",\"product\":\"%s\",\"mode\":\"%s\",\"tokens\":%lld,"
                  "\"expert_rows_min\":%lld,\"expert_rows_max\":%lld,\"ms\":%.3f,\"fraction_of_fma_peak\":%.3f,"
                  "\"load_avg\":%.1f}\n",
                  name, gemm_mode_name(mode), (long long)kTokens, (long long)*fewest, (long long)*most,
                  t.best_s * 1e3, flops / t.best_s / 1e9 / all.fma_peak_gflops, load_average());
      std::fflush(stdout);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = ThreadPool::hardware_threads();
  bool quick = false, decode_batch = false, prefill_moe = false;
  int repeats = 1;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--decode-batch")) decode_batch = true;
    else if (!std::strcmp(argv[i], "--prefill-moe")) prefill_moe = true;
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: gemm_bench [--threads N] [--quick] [--decode-batch] [--prefill-moe [--repeats R]]\n");
      return 2;
    }
  }
  ThreadPool pool(threads);
  // The machine is measured again before every shape and each shape's fractions use the limits measured just
  // before it: on a shared VM the speed drifts by up to 1.5x within a minute, more than the effects measured here.
  MachineLimits one, all;
  const auto measure_machine = [&](const char* before) {
    one = measure_machine_limits(nullptr);
    all = measure_machine_limits(&pool);
    for (const MachineLimits* m : {&one, &all})
      std::printf("{\"case\":\"machine\",\"before\":\"%s\",\"threads\":%d,\"isa\":\"%s\",\"stream_triad_gbps\":%.2f,"
                  "\"fma_peak_gflops\":%.1f,\"load_avg\":%.1f}\n",
                  before, m->threads, m->isa, m->stream_triad_gbps, m->fma_peak_gflops, load_average());
    std::fflush(stdout);
  };
  if (decode_batch) {
    decode_batch_cases(pool, measure_machine, all);
    return 0;
  }
  if (prefill_moe) {
    prefill_moe_cases(pool, measure_machine, all, repeats);
    return 0;
  }

  struct Shape {
    const char* name;
    int64_t n, k;
  };
  std::vector<Shape> shapes = {{"v3_q_a+kv_a", 2112, 7168}, {"v3_q_b", 24576, 1536}, {"v3_kv_b", 32768, 512},
                               {"v3_o_proj", 7168, 16384},  {"v3_expert_gate+up", 4096, 7168},
                               {"v3_expert_down", 7168, 2048}, {"v2lite_expert_gate+up", 2816, 2048},
                               {"v2lite_expert_down", 2048, 1408}};
  if (quick) shapes.resize(2);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  for (const Shape& s : shapes) {
    measure_machine(s.name);
    const Fp8Weight w = random_fp8_weight(s.n, s.k, uint64_t(s.n * 7 + s.k));
    const double weight_bytes = double(s.n) * double(s.k) + 4.0 * double(w.scale_inv.size());
    // GEMV reads weights from memory, as decode does: rotate through copies that together exceed the last-level
    // cache (256 MiB), so no call finds its weights cached by the previous one.
    std::vector<Fp8Weight> copies;
    for (double bytes = 0; bytes < double(size_t(256) << 20); bytes += weight_bytes)
      copies.push_back(random_fp8_weight(s.n, s.k, copies.size() + 1));
    size_t next = 0;
    // GEMV: weight bytes streamed per second.
    std::vector<float> x(size_t(16 * s.k)), y(size_t(16 * s.n));
    for (auto& v : x) v = normal(rng);
    for (auto mode : {GemmMode::W8A32, GemmMode::W8A8, GemmMode::W8A16})
      for (int t : {1, threads}) {
        ThreadPool* p = t == 1 ? nullptr : &pool;
        const MachineLimits& lim = t == 1 ? one : all;
        // Half a second of calls whatever their size: a 50-call window (~3 ms on small shapes) could fall in the
        // milliseconds before the scheduler spreads a just-woken pool onto both cores, and read as 1-thread speed.
        const Timing tm = best_seconds([&] {
          gemm(x.data(), 1, copies[next].view, y.data(), mode, p);
          next = (next + 1) % copies.size();
        }, 0.5, 100000);
        const double sec = tm.best_s;
        std::printf("{\"case\":\"gemv\",\"shape\":\"%s\",\"n\":%lld,\"k\":%lld,\"m\":1,\"mode\":\"%s\",\"threads\":%d,"
                    "\"bf16_dot\":%s,\"us\":%.1f,\"weight_gbps\":%.2f,\"fraction_of_stream\":%.3f,\"cpu_us\":%.1f,"
                    "\"load_avg\":%.1f,\"weights_huge_page_advised\":%s}\n",
                    s.name, (long long)s.n, (long long)s.k, gemm_mode_name(mode), t,
                    gemm_uses_bf16_dot(mode, DType::F8_E4M3) ? "true" : "false", sec * 1e6,
                    weight_bytes / sec / 1e9, weight_bytes / sec / 1e9 / lim.stream_triad_gbps, tm.cpu_s * 1e6,
                    load_average(), copies[0].q->huge() ? "true" : "false");
        std::fflush(stdout);
        if (threads == 1) break;
      }
    // GEMM: FLOP/s against the FMA peak, all threads (measured again just before).
    measure_machine((std::string(s.name) + " gemm").c_str());
    for (int64_t m : quick ? std::vector<int64_t>{512} : std::vector<int64_t>{512, 2048}) {
      // 64-byte aligned like the engine's activations (core/buffer_cache.h), which the GEMM reads in place.
      CachedBytes a_bytes, c_bytes;
      a_bytes.reset(size_t(m * s.k) * sizeof(float));
      c_bytes.reset(size_t(m * s.n) * sizeof(float));
      float* a = reinterpret_cast<float*>(a_bytes.data());
      float* c = reinterpret_cast<float*>(c_bytes.data());
      for (int64_t i = 0; i < m * s.k; ++i) a[i] = normal(rng);
      for (auto mode : {GemmMode::W8A32, GemmMode::W8A8, GemmMode::W8A16}) {
        // Best of up to 10 runs, stopping once they add up to a second: this machine's speed changes from second
        // to second (shared caches), and the best run is the kernel's, as the best STREAM / FMA repeat is the
        // machine's.
        const Timing tm = best_seconds([&] { gemm(a, m, w.view, c, mode, &pool); }, 1.0, 10);
        const double sec = tm.best_s;
        const double gflops = 2.0 * double(m) * double(s.n) * double(s.k) / sec / 1e9;
        std::printf("{\"case\":\"gemm\",\"shape\":\"%s\",\"n\":%lld,\"k\":%lld,\"m\":%lld,\"mode\":\"%s\","
                    "\"bf16_dot\":%s,\"threads\":%d,\"ms\":%.2f,\"gflops\":%.1f,\"fraction_of_fma_peak\":%.3f,"
                    "\"gflop_per_cpu_second\":%.1f,\"load_avg\":%.1f}\n",
                    s.name, (long long)s.n, (long long)s.k, (long long)m, gemm_mode_name(mode),
                    gemm_uses_bf16_dot(mode, DType::F8_E4M3) ? "true" : "false", threads, sec * 1e3, gflops, gflops / all.fma_peak_gflops,
                    2.0 * double(m) * double(s.n) * double(s.k) / tm.cpu_s / 1e9, load_average());
        std::fflush(stdout);
      }
    }
  }

  measure_machine("quantize_act_1x128");
  // quantize_act_1x128: bytes read (f32) + written (e4m3 + scales) per second.
  for (auto [m, k] : {std::pair<int64_t, int64_t>{1, 7168}, {2048, 7168}, {4096, 2048}}) {
    std::vector<float> x(size_t(m * k)), scales(size_t(m * quant_blocks(k)));
    std::vector<uint8_t> q(size_t(m * k));
    for (auto& v : x) v = normal(rng);
    for (int t : {1, threads}) {
      ThreadPool* p = t == 1 ? nullptr : &pool;
      const double sec =
          best_seconds([&] { quantize_act_1x128(x.data(), m, k, q.data(), scales.data(), false, p); }).best_s;
      const double bytes = double(m * k) * 5.0 + 4.0 * double(scales.size());
      std::printf("{\"case\":\"quantize_act_1x128\",\"m\":%lld,\"k\":%lld,\"threads\":%d,\"us\":%.1f,\"gbps\":%.2f}\n",
                  (long long)m, (long long)k, t, sec * 1e6, bytes / sec / 1e9);
      std::fflush(stdout);
      if (threads == 1) break;
    }
  }
  return 0;
}
