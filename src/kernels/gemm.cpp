// GEMM driver: validation, W8A8 activation quantization, A packing, tiling into tasks, ISA dispatch, lane sums.
//
// A decode-shaped call (M ≤ the ISA's gemv_max_rows) is cut into tasks of whole W panels (kGemvTaskBytes) that
// each stream their rows once, front to back (gemv_rows). Otherwise work is cut into tasks of (up to kChunkRows
// rows of A) × (kTaskPanels 16-row W panels). A task walks K in chunks of kChunkBlocks blocks; per chunk and panel it decodes
// the panel once into an L1-resident buffer (FP32, or 16-bit where the ISA widens on load) and runs every row of
// its chunk against it. Tasks are contiguous in W, and each thread starts on its own contiguous share of them
// (parallel_for_balanced), so it streams its own part of W until it helps a slower thread finish. Every output
// element is computed by exactly one task, in the fixed order of gemm.h, so neither the tiling, the thread count
// nor which thread ran a task can change a bit of it.
#include "kernels/gemm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/buffer_cache.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/gemm_kernels.h"
#include "kernels/quantize.h"

namespace deepmoe {
namespace {

using gemm_detail::BlockArgs;
using gemm_detail::DecodeArgs;
using gemm_detail::GemvArgs;
using gemm_detail::kBlockK;
using gemm_detail::kGemvMaxRows;
using gemm_detail::kLanes;
using gemm_detail::kPanelRows;

using gemm_detail::kChunkBlocks;

// A GEMM task: kChunkRows A rows × kTaskPanels W panels. Each decoded panel chunk is reused by the task's rows;
// the rows' slice of A for one K chunk (64 × 512 floats, 128 KB) is reused by every panel of the task; the lane
// accumulators (64 rows × 64 outputs × 16 lanes, 256 KB) stay in L2 with it.
constexpr int64_t kChunkRows = 64;
constexpr int kTaskPanels = 4;
// A GEMV task covers whole 16-row panels and at least kGemvTaskBytes of W, so each task streams long enough to
// pay for starting (tasks of 16 rows of 512 B, kv_b's shape, streamed at half the rate of 64 KB tasks: ~280 ns
// per task), but a call keeps at least kGemvMinTasksPerThread tasks per thread (and kGemvMinTasks) to balance
// threads on small projections.
constexpr int64_t kGemvTaskBytes = 64 << 10;
constexpr int64_t kGemvMinTasks = 16;
constexpr int64_t kGemvMinTasksPerThread = 4;
// A call of fewer multiply-adds runs on the calling thread alone: handing tasks to another thread and waiting for
// it costs microseconds on a quiet machine (far more on a loaded one), in which one thread does ~2^18 of them. A
// small model's decode step is made of such calls (the bundled model's largest product is 192 × 1024), and with
// two threads it ran at half the speed of one. Tasks write disjoint outputs, so this changes no bits.
constexpr int64_t kMinParallelMacs = int64_t(1) << 18;

struct Isa {
  void (*reduce_lanes)(const float*, int, float*);
  void (*gemv_rows)(const GemvArgs&);
  void (*block_update)(const BlockArgs&);
  void (*decode_block)(const DecodeArgs&);
  bool half_panel;  // decode_block / block_update take FP8 and BF16 panels in 16 bits (DecodeArgs::wbuf_half)
  bool fused_lane_sums;  // block_update writes C itself on the last chunk (BlockArgs::c)
  int64_t gemv_max_rows;  // calls of up to this many A rows take gemv_rows (gemm_kernels.h)
  // The BF16 dot-product path (gemm.h), or null where the CPU lacks AVX512_BF16 / AVX512_VBMI.
  void (*gemv_rows_dot)(const GemvArgs&) = nullptr;
  void (*block_update_dot)(const BlockArgs&) = nullptr;
  void (*decode_block_dot)(const DecodeArgs&) = nullptr;
  // The dot path's tiles evaluate its order on FP32 FMAs (gemm_kernels.h): where vdpbf16ps runs at less than
  // twice the FMA's rate, they are faster, with the same bits.
  bool dot_tiles_on_fma = false;
};

std::atomic<gemm_detail::DotTiles> g_dot_tiles{gemm_detail::DotTiles::Auto};

// Whether vdpbf16ps does fewer multiply-adds per second than FP32 FMAs here (measured once, ~1 ms): then the
// dot order's tiles are faster on FP32 FMAs (on Sapphire/Emerald Rapids vdpbf16ps does ~half the FMA's
// multiply-adds; on Zen 4/5 twice). Both give the same bits, so the answer changes only the speed.
bool dot_tiles_on_fma() {
  const gemm_detail::DotTiles forced = g_dot_tiles.load(std::memory_order_relaxed);
  if (forced != gemm_detail::DotTiles::Auto) return forced == gemm_detail::DotTiles::Fma;
  static const bool slower = [] {
    float sink[16];
    const auto seconds = [&](void (*loop)(int64_t, float*)) {
      double best = 1e30;
      for (int rep = 0; rep < 3; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        loop(20000, sink);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      return best;
    };
    // Per instruction vdpbf16ps does 32 multiply-adds, the FMA 16.
    const double dot = seconds(gemm_detail::bf16_dot_throughput_loop), fma = seconds(gemm_detail::fma_throughput_loop);
    return dot / 32 > fma / 16;
  }();
  return slower;
}

bool has_bf16_dot(IsaLevel level) {
  const CpuFeatures& f = cpu_features();
  return std::min(level, gemm_detail::hardware_isa_level()) == IsaLevel::Avx512 && f.avx512bf16 && f.avx512vbmi;
}

// F8_E4M3 weights in W8A8 and W8A16, BF16 weights in W8A16 (W8A8 quantizes the activations of FP8 products only;
// a BF16 weight there multiplies FP32 activations, as in W8A32).
bool uses_bf16_dot(IsaLevel level, GemmMode mode, DType weight_dtype) {
  const bool operands = (weight_dtype == DType::F8_E4M3 && mode != GemmMode::W8A32) ||
                        (weight_dtype == DType::BF16 && mode == GemmMode::W8A16);
  return operands && has_bf16_dot(level);
}

// W8A16 rounds the activations of FP8 and BF16 products to BF16, on every CPU (F32 weights keep FP32 activations).
bool rounds_activations_to_bf16(GemmMode mode, DType weight_dtype) {
  return mode == GemmMode::W8A16 && (weight_dtype == DType::F8_E4M3 || weight_dtype == DType::BF16);
}

Isa select_isa(IsaLevel level) {
  level = std::min(level, gemm_detail::hardware_isa_level());
  switch (level) {
    case IsaLevel::Avx512: {
      Isa isa{gemm_detail::reduce_lanes_avx512, gemm_detail::gemv_rows_avx512, gemm_detail::block_update_avx512,
              gemm_detail::decode_block_avx512, true, true, gemm_detail::kGemvMaxRowsAvx512};
      if (has_bf16_dot(level)) {
        isa.gemv_rows_dot = gemm_detail::gemv_rows_bf16_dot;
        isa.block_update_dot = gemm_detail::block_update_bf16_dot;
        isa.decode_block_dot = gemm_detail::decode_block_bf16_dot;
        isa.dot_tiles_on_fma = dot_tiles_on_fma();
      }
      return isa;
    }
    case IsaLevel::Avx2:
      return {gemm_detail::reduce_lanes_avx2, gemm_detail::gemv_rows_avx2, gemm_detail::block_update_avx2,
              gemm_detail::decode_block_avx2, false, false, kGemvMaxRows};
    default:
      return {gemm_detail::reduce_lanes_scalar, gemm_detail::gemv_rows_scalar, gemm_detail::block_update_scalar,
              gemm_detail::decode_block_scalar, false, false, kGemvMaxRows};
  }
}

// One product of a row range of A with one weight matrix.
struct Problem {
  const float* a;        // [rows, k], row stride lda
  const float* a_scale;  // [rows, ceil(k/128)] for W8A8, else null
  const WeightMatrix* w;
  float* c;              // [rows, n]
  int64_t rows;
  int64_t lda = 0;       // 0: k
  // The BF16 dot-product path instead of `a` (uses_bf16_dot): rows of lda_bf16 BF16 values, zero past k.
  const uint16_t* a_bf16 = nullptr;
  int64_t lda_bf16 = 0;
  // The same rows in the split form, row stride lda_bf16, where the dot path's tiles run on FMAs (Isa).
  const float* a_split = nullptr;
};

// A GEMV task covers W rows [panel0 · 16, + n_panels · 16) ∩ [0, n) for all of A's rows (gemv set); a GEMM task
// covers A rows [row0, row0 + rows) × the same W rows.
struct Task {
  const Problem* problem;
  int64_t row0, rows, panel0;
  int n_panels;
  bool gemv;
};

void check_weight(const WeightMatrix& w) {
  if (w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F8_E4M3)
    throw Error("gemm: unsupported weight dtype " + std::string(dtype_name(w.dtype)) +
                " (supported: F32, BF16, F8_E4M3)");
  if (w.n < 0 || w.k < 0) throw Error("gemm: negative weight shape");
  if (w.n * w.k > 0 && !w.data) throw Error("gemm: weight data is null");
  if (w.dtype == DType::F8_E4M3 && w.n * w.k > 0 && !w.scale_inv)
    throw Error("gemm: F8_E4M3 weight without scale_inv");
  if (w.dtype != DType::F8_E4M3 && w.scale_inv)
    throw Error("gemm: scale_inv given for a " + std::string(dtype_name(w.dtype)) + " weight");
}

// 64-byte aligned FP32 storage (the GEMM kernels' A rows and scratch buffers; with a vector's 16-byte alignment
// most 64-byte loads would straddle two cache lines), from the buffer cache. Grows, never shrinks.
class AlignedFloats {
 public:
  float* get(size_t n) {
    if (n * sizeof(float) > bytes_.size()) bytes_.reset(n * sizeof(float));
    return reinterpret_cast<float*>(bytes_.data());
  }

 private:
  CachedBytes bytes_;
};

void run_gemv_task(const Task& t, const Isa& isa) {
  const Problem& p = *t.problem;
  GemvArgs g;
  g.a = p.a;
  g.m = p.rows;
  g.a_scale = p.a_scale;
  g.w = p.w;
  g.row0 = t.panel0 * kPanelRows;
  g.rows = std::min<int64_t>(int64_t(t.n_panels) * kPanelRows, p.w->n - g.row0);
  g.c = p.c;
  if (p.a_bf16) {
    g.a_bf16 = p.a_bf16;
    g.lda_bf16 = p.lda_bf16;
    return isa.gemv_rows_dot(g);
  }
  isa.gemv_rows(g);
}

void run_gemm_task(const Task& t, const Isa& isa, AlignedFloats& wbuf_storage, AlignedFloats& lacc_storage) {
  const Problem& p = *t.problem;
  const WeightMatrix& w = *p.w;
  const int64_t kb_count = quant_blocks(w.k);
  const int64_t ldw = int64_t(kChunkBlocks) * kBlockK;
  const int64_t panel_lanes = t.rows * kPanelRows * kLanes;
  float* wbuf = wbuf_storage.get(size_t(kPanelRows * ldw));
  const bool dot = p.a_bf16 != nullptr, dot_fma = p.a_split != nullptr;
  const bool half =
      dot ? !dot_fma : isa.half_panel && (w.dtype == DType::F8_E4M3 || w.dtype == DType::BF16);
  uint16_t* wbuf_half = half ? reinterpret_cast<uint16_t*>(wbuf) : nullptr;
  float* lacc = lacc_storage.get(size_t(t.n_panels * panel_lanes));
  float w_scale[kChunkBlocks];
  for (int64_t kb0 = 0; kb0 < kb_count; kb0 += kChunkBlocks) {
    const int n_blocks = int(std::min<int64_t>(kChunkBlocks, kb_count - kb0));
    const int64_t col0 = kb0 * kBlockK;
    const int kn = int(std::min<int64_t>(int64_t(n_blocks) * kBlockK, w.k - col0));
    for (int q = 0; q < t.n_panels; ++q) {
      const int64_t row0_w = (t.panel0 + q) * kPanelRows;
      DecodeArgs d;
      // The panel decoded next: its 16 rows are 16 separate streams, more than the hardware prefetcher follows, so
      // the decoder asks for them while this panel computes.
      int64_t next_row = -1, next_col = 0, next_kn = 0;
      if (q + 1 < t.n_panels)
        next_row = (t.panel0 + q + 1) * kPanelRows, next_col = col0, next_kn = kn;
      else if (kb0 + kChunkBlocks < kb_count)
        next_row = t.panel0 * kPanelRows, next_col = col0 + ldw, next_kn = std::min<int64_t>(ldw, w.k - col0 - ldw);
      if (next_row >= 0) {
        const int64_t elem = int64_t(dtype_size_bytes(w.dtype));
        d.next = static_cast<const uint8_t*>(w.data) + (next_row * w.k + next_col) * elem;
        d.next_rows = std::min<int64_t>(kPanelRows, w.n - next_row);
        d.next_bytes = next_kn * elem;
      }
      d.dtype = w.dtype;
      d.data = w.data;
      d.k = w.k;
      d.row0 = row0_w;
      d.rows = std::min<int64_t>(kPanelRows, w.n - row0_w);
      d.col0 = col0;
      d.kn = kn;
      d.ldw = ldw;
      d.wbuf = wbuf;
      d.wbuf_half = wbuf_half;
      (dot_fma ? gemm_detail::decode_block_bf16_dot_fp32 : dot ? isa.decode_block_dot : isa.decode_block)(d);
      const bool fp8 = w.dtype == DType::F8_E4M3;
      for (int b = 0; b < n_blocks; ++b)  // the dot path's panel holds the e4m3 values themselves, not q·2^-8
        w_scale[b] = dot && fp8 ? w.scale_inv[(row0_w / kBlockK) * kb_count + kb0 + b]
                                : gemm_detail::weight_block_scale(w, row0_w, kb0 + b, kb_count);
      BlockArgs g;
      g.a = p.a + t.row0 * p.lda + col0;
      g.lda = p.lda;
      g.rows = t.rows;
      g.n_blocks = n_blocks;
      g.kn_last = kn - (n_blocks - 1) * kBlockK;
      g.wbuf = wbuf;
      g.wbuf_half = wbuf_half;
      g.half_is_bf16 = w.dtype == DType::BF16;
      g.ldw = ldw;
      g.a_scale = p.a_scale ? p.a_scale + t.row0 * kb_count + kb0 : nullptr;
      g.a_scale_stride = kb_count;
      g.w_scale = w_scale;
      g.lacc = lacc + q * panel_lanes;
      g.first_chunk = kb0 == 0;
      if ((dot || isa.fused_lane_sums) && kb0 + kChunkBlocks >= kb_count) {
        g.c = p.c + t.row0 * w.n + row0_w;
        g.ldc = w.n;
        g.c_cols = int(std::min<int64_t>(kPanelRows, w.n - row0_w));
      }
      if (dot) {
        g.a_bf16 = p.a_bf16 + t.row0 * p.lda_bf16 + col0;
        g.lda = p.lda_bf16;
        g.block_scales = fp8;
        if (dot_fma) {
          g.a = p.a_split + t.row0 * p.lda_bf16 + col0;
          g.wbuf_half = nullptr;
        }
        (dot_fma ? gemm_detail::block_update_bf16_dot_fp32 : isa.block_update_dot)(g);
      } else {
        isa.block_update(g);
      }
    }
  }
  if (dot || isa.fused_lane_sums) return;
  for (int q = 0; q < t.n_panels; ++q) {
    const int64_t row0_w = (t.panel0 + q) * kPanelRows;
    const int64_t w_rows = std::min<int64_t>(kPanelRows, w.n - row0_w);
    const float* lq = lacc + q * panel_lanes;
    for (int64_t r = 0; r < t.rows; ++r)
      isa.reduce_lanes(lq + r * kPanelRows * kLanes, int(w_rows), p.c + (t.row0 + r) * w.n + row0_w);
  }
}

void run_problems(std::vector<Problem> problems, IsaLevel level, ThreadPool* pool) {
  const Isa isa = select_isa(level);
  int64_t macs = 0;
  for (const Problem& p : problems) macs += p.rows * p.w->n * p.w->k;
  if (macs < kMinParallelMacs) pool = nullptr;
  // The BF16 dot product takes FP8 weights through the GEMV up to the common limit only (gemm_kernels.h).
  const auto gemv = [&](const Problem& p) {
    return p.rows <= (p.a_bf16 && p.w->dtype == DType::F8_E4M3 ? kGemvMaxRows : isa.gemv_max_rows);
  };
  // GEMM-shaped problems read A through 64-byte vectors many times over: give them cache-line-aligned rows.
  size_t packed_size = 0;
  const auto needs_packing = [&](const Problem& p) {
    return !p.a_bf16 && !gemv(p) && p.w->n > 0 && p.w->k > 0 &&
           (reinterpret_cast<uintptr_t>(p.a) % 64 != 0 || p.w->k % 16 != 0);
  };
  const auto padded_k = [](int64_t k) { return (k + 15) / 16 * 16; };
  for (Problem& p : problems) {
    p.lda = p.w->k;
    if (needs_packing(p)) packed_size += size_t(p.rows * padded_k(p.w->k));
  }
  // Kept per calling thread: a fresh allocation per call would be page-faulted in (and zeroed by the kernel)
  // every time.
  thread_local AlignedFloats packed;
  if (packed_size > 0) {
    float* next = packed.get(packed_size);
    for (Problem& p : problems) {
      if (!needs_packing(p)) continue;
      const int64_t k = p.w->k, ld = padded_k(k);
      const float* src = p.a;
      parallel_for(pool, p.rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) std::memcpy(next + r * ld, src + r * k, size_t(k) * sizeof(float));
      });
      p.a = next;
      p.lda = ld;
      next += p.rows * ld;
    }
  }
  // The split form of A for the dot path's tiles on FMAs: one pass over every such problem's rows.
  thread_local AlignedFloats split;
  if (isa.dot_tiles_on_fma) {
    std::vector<Problem*> users;
    std::vector<int64_t> first_row{0};
    for (Problem& p : problems)
      if (p.a_bf16 && !gemv(p) && p.w->n > 0 && p.w->k > 0) {
        users.push_back(&p);
        first_row.push_back(first_row.back() + p.rows);
      }
    if (!users.empty()) {
      const int64_t lda = users[0]->lda_bf16;
      float* base = split.get(size_t(first_row.back() * lda));
      for (size_t u = 0; u < users.size(); ++u) users[u]->a_split = base + first_row[u] * lda;
      parallel_for(pool, first_row.back(), [&](int64_t r0, int64_t r1) {
        size_t u = size_t(std::upper_bound(first_row.begin(), first_row.end(), r0) - first_row.begin()) - 1;
        for (int64_t r = r0; r < r1; ++u) {
          const Problem& p = *users[u];
          const int64_t end = std::min(r1, first_row[u + 1]), local = r - first_row[u];
          gemm_detail::bf16_rows_to_split_fp32(p.a_bf16 + local * lda, end - r, lda, base + r * lda);
          r = end;
        }
      });
    }
  }
  std::vector<Task> tasks;
  for (const Problem& p : problems) {
    const WeightMatrix& w = *p.w;
    if (p.rows == 0 || w.n == 0) continue;
    if (w.k == 0) {
      std::fill(p.c, p.c + p.rows * w.n, 0.0f);
      continue;
    }
    const int64_t panels = (w.n + kPanelRows - 1) / kPanelRows;
    if (gemv(p)) {
      const int64_t panel_bytes = kPanelRows * w.k * int64_t(dtype_size_bytes(w.dtype));
      const int64_t min_tasks = std::max<int64_t>(kGemvMinTasks, kGemvMinTasksPerThread * (pool ? pool->size() : 1));
      const int64_t per_task =
          std::max<int64_t>(1, std::min((kGemvTaskBytes + panel_bytes - 1) / panel_bytes, panels / min_tasks));
      for (int64_t q = 0; q < panels; q += per_task)
        tasks.push_back({&p, 0, p.rows, q, int(std::min(per_task, panels - q)), true});
      continue;
    }
    for (int64_t r = 0; r < p.rows; r += kChunkRows)
      for (int64_t q = 0; q < panels; q += kTaskPanels)
        tasks.push_back(
            {&p, r, std::min(kChunkRows, p.rows - r), q, int(std::min<int64_t>(kTaskPanels, panels - q)), false});
  }
  if (tasks.empty()) return;
  // Tasks write disjoint outputs with a fixed reduction order, so the balanced split changes no bits.
  parallel_for_balanced(pool, int64_t(tasks.size()), [&](int64_t t, int) {
    thread_local AlignedFloats wbuf, lacc;  // per worker thread, reused across calls (see `packed`)
    const Task& task = tasks[size_t(t)];
    if (task.gemv)
      run_gemv_task(task, isa);
    else
      run_gemm_task(task, isa, wbuf, lacc);
  });
}

// 1x128 quantization of A followed by exact decoding, so the kernels see the e4m3 values as FP32. The decoded rows
// go to aligned storage, so run_problems need not copy them again.
float* quantize_rows(const float* a, int64_t m, int64_t k, AlignedFloats& a_q, std::vector<float>& a_scale,
                     ThreadPool* pool) {
  std::vector<uint8_t> q(size_t(m * k));
  a_scale.resize(size_t(m * quant_blocks(k)));
  quantize_act_1x128(a, m, k, q.data(), a_scale.data(), false, pool);
  float* out = a_q.get(size_t(m * k));
  parallel_for(pool, m, [&](int64_t i0, int64_t i1) {
    convert_fp8_e4m3_to_f32(q.data() + i0 * k, out + i0 * k, size_t((i1 - i0) * k));
  });
  return out;
}

// A for the BF16 dot-product path: [m, lda] BF16 rows (lda = k rounded up to 32, zero past k), from the 1x128
// e4m3 codes (W8A8, exact) or from FP32 by the W8A16 rounding.
int64_t bf16_row_stride(int64_t k) { return (k + 31) / 32 * 32; }

uint16_t* bf16_rows_from_codes(const uint8_t* q, int64_t m, int64_t k, AlignedFloats& storage, ThreadPool* pool) {
  const int64_t lda = bf16_row_stride(k);
  auto* out = reinterpret_cast<uint16_t*>(storage.get(size_t(m * lda + 1) / 2));
  parallel_for(pool, m, [&](int64_t i0, int64_t i1) {
    gemm_detail::e4m3_rows_to_bf16(q + i0 * k, i1 - i0, k, out + i0 * lda, lda);
  });
  return out;
}

uint16_t* bf16_rows(const float* a, int64_t m, int64_t k, GemmMode mode, AlignedFloats& storage,
                    std::vector<float>& a_scale, ThreadPool* pool) {
  if (mode == GemmMode::W8A8) {
    std::vector<uint8_t> q(size_t(m * k));
    a_scale.resize(size_t(m * quant_blocks(k)));
    quantize_act_1x128(a, m, k, q.data(), a_scale.data(), false, pool);
    return bf16_rows_from_codes(q.data(), m, k, storage, pool);
  }
  const int64_t lda = bf16_row_stride(k);
  auto* out = reinterpret_cast<uint16_t*>(storage.get(size_t(m * lda + 1) / 2));
  parallel_for(pool, m, [&](int64_t i0, int64_t i1) {
    gemm_detail::f32_rows_to_bf16(a + i0 * k, i1 - i0, k, out + i0 * lda, lda);
  });
  return out;
}

// W8A16 where the dot product is not available: the BF16-rounded activations, as FP32, through the FP32 order
// (so the mode multiplies the same operands on every CPU; only the rounding order differs, gemm.h).
float* bf16_rounded_rows(const float* a, int64_t m, int64_t k, AlignedFloats& storage, ThreadPool* pool) {
  float* out = storage.get(size_t(m * k));
  parallel_for(pool, m, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0 * k; i < i1 * k; ++i) out[i] = bf16_to_f32(activation_to_bf16(a[i]));
  });
  return out;
}

// gemm_counters(): integers, so concurrent callers add without a lock and without losing updates.
std::atomic<uint64_t> g_calls{0}, g_flops{0}, g_nanoseconds{0};

// Adds one call's FLOPs and wall time to the counters when it goes out of scope (also when the call throws).
class CallTimer {
 public:
  explicit CallTimer(double flops) : flops_(flops), start_(std::chrono::steady_clock::now()) {}
  ~CallTimer() {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_);
    g_calls.fetch_add(1, std::memory_order_relaxed);
    g_flops.fetch_add(uint64_t(flops_), std::memory_order_relaxed);
    g_nanoseconds.fetch_add(uint64_t(ns.count()), std::memory_order_relaxed);
  }
  CallTimer(const CallTimer&) = delete;
  CallTimer& operator=(const CallTimer&) = delete;

 private:
  double flops_;
  std::chrono::steady_clock::time_point start_;
};

double product_flops(int64_t m, const WeightMatrix& w) { return 2.0 * double(m) * double(w.n) * double(w.k); }

void check_buffers(const float* a, int64_t m, const WeightMatrix& w, const float* c) {
  check_weight(w);
  if (m < 0) throw Error("gemm: negative row count");
  if (m * w.k > 0 && !a) throw Error("gemm: A is null");
  if (m * w.n > 0 && !c) throw Error("gemm: C is null");
}

}  // namespace

IsaLevel gemm_detail::hardware_isa_level() {
  const CpuFeatures& f = cpu_features();
  if (f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) return IsaLevel::Avx512;
  if (f.avx2 && f.fma && f.f16c) return IsaLevel::Avx2;
  return IsaLevel::Scalar;
}

const char* gemm_mode_name(GemmMode mode) {
  switch (mode) {
    case GemmMode::W8A8: return "w8a8";
    case GemmMode::W8A16: return "w8a16";
    case GemmMode::W8A32: return "w8a32";
  }
  return "?";
}

void gemm_detail::set_dot_tiles(DotTiles tiles) { g_dot_tiles.store(tiles, std::memory_order_relaxed); }

bool gemm_detail::bf16_dot_at_level(IsaLevel level, GemmMode mode, DType weight_dtype) {
  return uses_bf16_dot(level, mode, weight_dtype);
}

bool gemm_uses_bf16_dot(GemmMode mode, DType weight_dtype) {
  return uses_bf16_dot(cpu_features().level, mode, weight_dtype);
}

void gemm(const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode, ThreadPool* pool) {
  gemm_detail::gemm_at_level(cpu_features().level, a, m, w, c, mode, pool);
}

void grouped_gemm(const float* a, const int64_t* row_offsets, int64_t n_groups, const WeightMatrix* weights,
                  float* c, GemmMode mode, ThreadPool* pool) {
  gemm_detail::grouped_gemm_at_level(cpu_features().level, a, row_offsets, n_groups, weights, c, mode, pool);
}

GemmCounters gemm_counters() {
  GemmCounters c;
  c.calls = g_calls.load(std::memory_order_relaxed);
  c.flops = double(g_flops.load(std::memory_order_relaxed));
  c.seconds = 1e-9 * double(g_nanoseconds.load(std::memory_order_relaxed));
  return c;
}

void gemm_detail::gemm_at_level(IsaLevel level, const float* a, int64_t m, const WeightMatrix& w, float* c,
                                GemmMode mode, ThreadPool* pool) {
  check_buffers(a, m, w, c);
  const CallTimer timer(product_flops(m, w));
  AlignedFloats a_q;
  std::vector<float> a_scale;
  if (uses_bf16_dot(level, mode, w.dtype)) {
    Problem p{nullptr, nullptr, &w, c, m};
    p.a_bf16 = bf16_rows(a, m, w.k, mode, a_q, a_scale, pool);
    p.lda_bf16 = bf16_row_stride(w.k);
    p.a_scale = mode == GemmMode::W8A8 ? a_scale.data() : nullptr;
    return run_problems({p}, level, pool);
  }
  const bool w8a8 = mode == GemmMode::W8A8 && w.dtype == DType::F8_E4M3;
  const float* a_used = w8a8                                       ? quantize_rows(a, m, w.k, a_q, a_scale, pool)
                        : rounds_activations_to_bf16(mode, w.dtype) ? bf16_rounded_rows(a, m, w.k, a_q, pool)
                                                                    : a;
  run_problems({Problem{a_used, w8a8 ? a_scale.data() : nullptr, &w, c, m}}, level, pool);
}

void gemm_fp8_act(const uint8_t* a_q, const float* a_scales, int64_t m, const WeightMatrix& w, float* c,
                  ThreadPool* pool) {
  check_buffers(reinterpret_cast<const float*>(a_q), m, w, c);
  if (w.dtype != DType::F8_E4M3) throw Error("gemm_fp8_act: the weight must be F8_E4M3");
  if (m * w.k > 0 && !a_scales) throw Error("gemm_fp8_act: activation scales are null");
  const CallTimer timer(product_flops(m, w));
  AlignedFloats a;
  if (uses_bf16_dot(cpu_features().level, GemmMode::W8A8, w.dtype)) {
    Problem p{nullptr, a_scales, &w, c, m};
    p.a_bf16 = bf16_rows_from_codes(a_q, m, w.k, a, pool);
    p.lda_bf16 = bf16_row_stride(w.k);
    return run_problems({p}, cpu_features().level, pool);
  }
  float* a_f32 = a.get(size_t(m * w.k));
  convert_fp8_e4m3_to_f32(a_q, a_f32, size_t(m * w.k));
  run_problems({Problem{a_f32, a_scales, &w, c, m}}, cpu_features().level, pool);
}

void gemm_detail::grouped_gemm_at_level(IsaLevel level, const float* a, const int64_t* row_offsets,
                                        int64_t n_groups, const WeightMatrix* weights, float* c, GemmMode mode,
                                        ThreadPool* pool) {
  if (n_groups <= 0) return;
  const int64_t first = row_offsets[0], m = row_offsets[n_groups] - first;
  for (int64_t g = 0; g < n_groups; ++g) {
    check_weight(weights[g]);
    if (row_offsets[g + 1] < row_offsets[g])
      throw Error("grouped_gemm: row offsets decrease at group " + std::to_string(g));
    if (weights[g].n != weights[0].n || weights[g].k != weights[0].k)
      throw Error("grouped_gemm: group " + std::to_string(g) + " weight shape differs from group 0");
  }
  const int64_t n = weights[0].n, k = weights[0].k;
  check_buffers(a, m, weights[0], c);
  const CallTimer timer(product_flops(m, weights[0]));
  // Quantization and rounding are per row, so doing all rows at once gives each group exactly what gemm() would
  // give it. Each form of A is made once, if some group's weight dtype takes it.
  bool need_dot = false, need_q = false, need_rounded = false;
  for (int64_t g = 0; g < n_groups; ++g) {
    const DType d = weights[g].dtype;
    const bool dot = uses_bf16_dot(level, mode, d);
    need_dot |= dot;
    need_q |= !dot && mode == GemmMode::W8A8 && d == DType::F8_E4M3;
    need_rounded |= !dot && rounds_activations_to_bf16(mode, d);
  }
  AlignedFloats dot_storage, q_storage, rounded_storage;
  std::vector<float> a_scale, dot_a_scale;
  const float* a0 = a + first * k;
  const uint16_t* a_bf16 = need_dot ? bf16_rows(a0, m, k, mode, dot_storage, dot_a_scale, pool) : nullptr;
  const float* a_q = need_q ? quantize_rows(a0, m, k, q_storage, a_scale, pool) : nullptr;
  const float* a_rounded = need_rounded ? bf16_rounded_rows(a0, m, k, rounded_storage, pool) : nullptr;
  const int64_t kb_count = quant_blocks(k), lda_bf16 = bf16_row_stride(k);
  std::vector<Problem> problems;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t r0 = row_offsets[g] - first, rows = row_offsets[g + 1] - row_offsets[g];
    const DType d = weights[g].dtype;
    Problem p{a0 + r0 * k, nullptr, &weights[g], c + (first + r0) * n, rows};
    if (uses_bf16_dot(level, mode, d)) {
      p.a = nullptr;
      p.a_bf16 = a_bf16 + r0 * lda_bf16;
      p.lda_bf16 = lda_bf16;
      if (mode == GemmMode::W8A8) p.a_scale = dot_a_scale.data() + r0 * kb_count;
    } else if (mode == GemmMode::W8A8 && d == DType::F8_E4M3) {
      p.a = a_q + r0 * k;
      p.a_scale = a_scale.data() + r0 * kb_count;
    } else if (rounds_activations_to_bf16(mode, d)) {
      p.a = a_rounded + r0 * k;
    }
    problems.push_back(p);
  }
  run_problems(problems, level, pool);
}

}  // namespace deepmoe
