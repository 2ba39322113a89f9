// GEMM driver: validation, W8A8 activation quantization, tiling into tasks, ISA dispatch, scatter of results.
//
// Work is cut into tasks of (up to kChunkRows rows of A) × (a group of 16-row W panels). A task loops over the K
// blocks in order; per block it decodes its W panels once into an L1/L2-resident FP32 buffer and runs every row
// of its chunk against them, so a decode-shaped call (M ≤ 16: one chunk) streams each weight byte exactly once
// and a prefill-shaped call reuses each decoded panel across up to kChunkRows rows. Every output element is
// computed by exactly one task, in the fixed order of gemm.h, so neither the tiling nor the thread count can
// change a bit of it.
#include "kernels/gemm.h"

#include <algorithm>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/gemm_kernels.h"
#include "kernels/quantize.h"

namespace deepmoe {
namespace {

using gemm_detail::DecodeArgs;
using gemm_detail::KbArgs;
using gemm_detail::kBlockK;
using gemm_detail::kPanelRows;

// Rows of A per task in prefill; W panels per task for decode-shaped (GEMV) and prefill-shaped calls.
constexpr int64_t kChunkRows = 128;
constexpr int kGemvPanels = 2;
constexpr int kGemmPanels = 4;

struct Isa {
  void (*kb_update)(const KbArgs&);
  void (*decode_block)(const DecodeArgs&);
};

Isa select_isa(IsaLevel level) {
  level = std::min(level, gemm_detail::hardware_isa_level());
  switch (level) {
    case IsaLevel::Avx512: return {gemm_detail::kb_update_avx512, gemm_detail::decode_block_avx512};
    case IsaLevel::Avx2: return {gemm_detail::kb_update_avx2, gemm_detail::decode_block_avx2};
    default: return {gemm_detail::kb_update_scalar, gemm_detail::decode_block_scalar};
  }
}

// One product of a row range of A with one weight matrix.
struct Problem {
  const float* a;        // [rows, k]
  const float* a_scale;  // [rows, ceil(k/128)] for W8A8, else null
  const WeightMatrix* w;
  float* c;              // [rows, n]
  int64_t rows;
};

struct Task {
  const Problem* problem;
  int64_t row0, rows, panel0;
  int n_panels;
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

void run_task(const Task& t, const Isa& isa, std::vector<float>& wbuf, std::vector<float>& cacc) {
  const Problem& p = *t.problem;
  const WeightMatrix& w = *p.w;
  const int64_t kb_count = quant_blocks(w.k);
  const int64_t row0_w = t.panel0 * kPanelRows;
  const int64_t w_rows = std::min<int64_t>(int64_t(t.n_panels) * kPanelRows, w.n - row0_w);
  wbuf.resize(size_t(t.n_panels) * kPanelRows * kBlockK);
  cacc.assign(size_t(t.n_panels) * size_t(t.rows) * 16, 0.0f);
  float w_scale[kGemmPanels > kGemvPanels ? kGemmPanels : kGemvPanels];
  for (int64_t kb = 0; kb < kb_count; ++kb) {
    const int kn = int(std::min<int64_t>(kBlockK, w.k - kb * kBlockK));
    DecodeArgs d;
    d.dtype = w.dtype;
    d.data = w.data;
    d.k = w.k;
    d.row0 = row0_w;
    d.rows = w_rows;
    d.col0 = kb * kBlockK;
    d.kn = kn;
    d.n_panels = t.n_panels;
    d.wbuf = wbuf.data();
    isa.decode_block(d);
    for (int q = 0; q < t.n_panels; ++q) {
      // The decoders return e4m3 codes as q·2^-8; the 2^8 comes back here, exactly (a power of two).
      const int64_t nb = (row0_w + int64_t(q) * kPanelRows) / kBlockK;
      w_scale[q] = w.dtype == DType::F8_E4M3 ? w.scale_inv[nb * kb_count + kb] * 256.0f : 1.0f;
    }
    KbArgs g;
    g.a = p.a + t.row0 * w.k + kb * kBlockK;
    g.lda = w.k;
    g.rows = t.rows;
    g.kn = kn;
    g.wbuf = wbuf.data();
    g.n_panels = t.n_panels;
    g.a_scale = p.a_scale ? p.a_scale + t.row0 * kb_count + kb : nullptr;
    g.a_scale_stride = kb_count;
    g.w_scale = w_scale;
    g.cacc = cacc.data();
    isa.kb_update(g);
  }
  // Scatter cacc (layout in gemm_kernels.h) into C.
  for (int q = 0; q < t.n_panels; ++q) {
    const float* cp = cacc.data() + size_t(q) * size_t(t.rows) * 16;
    const int64_t col0 = row0_w + int64_t(q) * kPanelRows;
    const int cols = int(std::min<int64_t>(kPanelRows, w.n - col0));
    for (int64_t r = 0; r < t.rows;) {
      const int mr = t.rows - r >= 4 ? 4 : t.rows - r >= 2 ? 2 : 1;
      const int nr = 16 / mr;
      for (int i = 0; i < mr; ++i) {
        float* crow = p.c + (t.row0 + r + i) * w.n + col0;
        for (int j = 0; j < cols; ++j) crow[j] = cp[16 * r + 16 * (j / nr) + nr * i + j % nr];
      }
      r += mr;
    }
  }
}

void run_problems(const std::vector<Problem>& problems, IsaLevel level, ThreadPool* pool) {
  std::vector<Task> tasks;
  for (const Problem& p : problems) {
    const WeightMatrix& w = *p.w;
    if (p.rows == 0 || w.n == 0) continue;
    if (w.k == 0) {
      std::fill(p.c, p.c + p.rows * w.n, 0.0f);
      continue;
    }
    const int64_t panels = (w.n + kPanelRows - 1) / kPanelRows;
    const int per_task = p.rows <= 16 ? kGemvPanels : kGemmPanels;
    for (int64_t r = 0; r < p.rows; r += kChunkRows)
      for (int64_t q = 0; q < panels; q += per_task)
        tasks.push_back({&p, r, std::min(kChunkRows, p.rows - r), q, int(std::min<int64_t>(per_task, panels - q))});
  }
  if (tasks.empty()) return;
  const Isa isa = select_isa(level);
  parallel_for(pool, int64_t(tasks.size()), [&](int64_t t0, int64_t t1) {
    std::vector<float> wbuf, cacc;
    for (int64_t t = t0; t < t1; ++t) run_task(tasks[size_t(t)], isa, wbuf, cacc);
  });
}

// 1x128 quantization of A followed by exact decoding, so the kernels see the e4m3 values as FP32.
void quantize_rows(const float* a, int64_t m, int64_t k, std::vector<float>& a_q, std::vector<float>& a_scale,
                   ThreadPool* pool) {
  std::vector<uint8_t> q(size_t(m * k));
  a_scale.resize(size_t(m * quant_blocks(k)));
  quantize_act_1x128(a, m, k, q.data(), a_scale.data(), false, pool);
  a_q.resize(size_t(m * k));
  parallel_for(pool, m, [&](int64_t i0, int64_t i1) {
    convert_fp8_e4m3_to_f32(q.data() + i0 * k, a_q.data() + i0 * k, size_t((i1 - i0) * k));
  });
}

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

void gemm(const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode, ThreadPool* pool) {
  gemm_detail::gemm_at_level(cpu_features().level, a, m, w, c, mode, pool);
}

void grouped_gemm(const float* a, const int64_t* row_offsets, int64_t n_groups, const WeightMatrix* weights,
                  float* c, GemmMode mode, ThreadPool* pool) {
  gemm_detail::grouped_gemm_at_level(cpu_features().level, a, row_offsets, n_groups, weights, c, mode, pool);
}

void gemm_detail::gemm_at_level(IsaLevel level, const float* a, int64_t m, const WeightMatrix& w, float* c,
                                GemmMode mode, ThreadPool* pool) {
  check_buffers(a, m, w, c);
  std::vector<float> a_q, a_scale;
  const bool w8a8 = mode == GemmMode::W8A8 && w.dtype == DType::F8_E4M3;
  if (w8a8) quantize_rows(a, m, w.k, a_q, a_scale, pool);
  run_problems({Problem{w8a8 ? a_q.data() : a, w8a8 ? a_scale.data() : nullptr, &w, c, m}}, level, pool);
}

void gemm_fp8_act(const uint8_t* a_q, const float* a_scales, int64_t m, const WeightMatrix& w, float* c,
                  ThreadPool* pool) {
  check_buffers(reinterpret_cast<const float*>(a_q), m, w, c);
  if (w.dtype != DType::F8_E4M3) throw Error("gemm_fp8_act: the weight must be F8_E4M3");
  if (m * w.k > 0 && !a_scales) throw Error("gemm_fp8_act: activation scales are null");
  std::vector<float> a(size_t(m * w.k));
  convert_fp8_e4m3_to_f32(a_q, a.data(), a.size());
  run_problems({Problem{a.data(), a_scales, &w, c, m}}, cpu_features().level, pool);
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
  bool any_fp8 = false;
  for (int64_t g = 0; g < n_groups; ++g) any_fp8 |= weights[g].dtype == DType::F8_E4M3;
  std::vector<float> a_q, a_scale;
  const bool w8a8 = mode == GemmMode::W8A8 && any_fp8;
  // Quantization is per row, so doing all rows at once gives each group exactly what gemm() would give it.
  if (w8a8) quantize_rows(a + first * k, m, k, a_q, a_scale, pool);
  const int64_t kb_count = quant_blocks(k);
  std::vector<Problem> problems;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t r0 = row_offsets[g] - first, rows = row_offsets[g + 1] - row_offsets[g];
    const bool q = w8a8 && weights[g].dtype == DType::F8_E4M3;
    problems.push_back({q ? a_q.data() + r0 * k : a + (first + r0) * k, q ? a_scale.data() + r0 * kb_count : nullptr,
                        &weights[g], c + (first + r0) * n, rows});
  }
  run_problems(problems, level, pool);
}

}  // namespace deepmoe
