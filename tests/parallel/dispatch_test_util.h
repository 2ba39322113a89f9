// Shared by the thread-rank and MPI dispatch tests: a deterministic routed batch, a toy expert that depends only
// on its logical id, and DeepEP's calc_diff.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "parallel/communicator.h"
#include "parallel/expert_placement.h"
#include "parallel/moe_dispatch.h"

namespace deepmoe::testing {

struct RoutedBatch {
  int64_t n_tokens = 0, hidden = 0;
  int topk = 0;
  std::vector<float> x;          // [T, H]
  std::vector<int64_t> idx;      // [T, k], distinct experts per token, some -1
  std::vector<float> weights;    // [T, k], positive, summing to 1 over valid entries
};

// Zipf-like skew so that some experts are hot (exercises replicas); every 7th token drops its last expert.
inline RoutedBatch make_routed_batch(int64_t n_tokens, int64_t hidden, int n_experts, int topk, uint32_t seed) {
  RoutedBatch b{n_tokens, hidden, topk, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  b.x.resize(size_t(n_tokens * hidden));
  for (auto& v : b.x) v = normal(rng) * (1.0f + 3.0f * float(rng() % 4 == 0));
  std::vector<double> cdf(static_cast<size_t>(n_experts));
  double acc = 0;
  for (int e = 0; e < n_experts; ++e) cdf[size_t(e)] = acc += 1.0 / (e + 1);
  std::uniform_real_distribution<double> u(0.0, acc);
  b.idx.assign(size_t(n_tokens * topk), -1);
  b.weights.assign(size_t(n_tokens * topk), 0.0f);
  for (int64_t t = 0; t < n_tokens; ++t) {
    std::vector<int64_t> chosen;
    while (int(chosen.size()) < topk) {
      int64_t e = std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin();
      e = std::min<int64_t>(e, n_experts - 1);
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    int valid = (t % 7 == 3) ? topk - 1 : topk;
    float sum = 0;
    for (int j = 0; j < valid; ++j) {
      b.idx[size_t(t * topk + j)] = chosen[size_t(j)];
      sum += b.weights[size_t(t * topk + j)] = 0.1f + float(rng() % 1000) / 1000.0f;
    }
    for (int j = 0; j < valid; ++j) b.weights[size_t(t * topk + j)] /= sum;
  }
  return b;
}

// Rows [begin, end) of the batch as tensors.
struct BatchSlice {
  Tensor x, idx, weights;
};
inline BatchSlice slice_batch(RoutedBatch& b, int64_t begin, int64_t end) {
  const int64_t n = end - begin;
  BatchSlice s;
  s.x = Tensor::view(DType::F32, {n, b.hidden}, b.x.data() + begin * b.hidden);
  s.idx = Tensor::view(DType::I64, {n, int64_t(b.topk)}, b.idx.data() + begin * b.topk);
  s.weights = Tensor::view(DType::F32, {n, int64_t(b.topk)}, b.weights.data() + begin * b.topk);
  return s;
}

// Token range of `rank` when T tokens are split unevenly over R ranks: rank r gets a share ∝ r + 1, and with
// three or more ranks the last one gets none, so a rank without tokens always takes part.
inline std::pair<int64_t, int64_t> rank_token_range(int64_t T, int rank, int R) {
  const int64_t with_tokens = R >= 3 ? R - 1 : R;
  if (rank >= with_tokens) return {T, T};
  const int64_t total = with_tokens * (with_tokens + 1) / 2;
  return {T * (int64_t(rank) * (rank + 1) / 2) / total, T * (int64_t(rank + 1) * (rank + 2) / 2) / total};
}

// Toy expert e: y = x · (1 + e/64) + e/1024, per element (depends on the logical id only).
inline void toy_expert(int logical, const float* x, float* y, int64_t hidden) {
  const float a = 1.0f + float(logical) / 64.0f, c = float(logical) / 1024.0f;
  for (int64_t i = 0; i < hidden; ++i) y[i] = x[i] * a + c;
}

// Runs the toy experts over a dispatch result on this rank.
inline Tensor run_toy_experts(const DispatchResult& d, const ExpertPlacement& p, int layer, int rank, bool identity) {
  const int64_t rows = d.x.dim(0), H = d.x.dim(1);
  Tensor out = Tensor::zeros(DType::F32, {rows, H});
  for (int s = 0; s < p.slots_per_rank(); ++s) {
    const int logical = p.logical_of_local(layer, rank, s);
    for (int64_t r = d.row_offsets[size_t(s)]; r < d.row_offsets[size_t(s) + 1]; ++r) {
      const float* in = d.x.data<float>() + r * H;
      float* o = out.data<float>() + r * H;
      if (identity)
        std::copy(in, in + H, o);
      else
        toy_expert(logical, in, o, H);
    }
  }
  return out;
}

// Plain-loop reference: the source's row after the payload round trip (quantize/dequantize with act_quant
// semantics written out here independently), then Σ_j fl(w_j · expert(row)) in j order, in float.
inline std::vector<float> reference_moe(const RoutedBatch& b, DispatchPayload payload, bool identity) {
  const int64_t H = b.hidden;
  std::vector<float> y(b.x.size(), 0.0f), row(static_cast<size_t>(H)), out(static_cast<size_t>(H));
  for (int64_t t = 0; t < b.n_tokens; ++t) {
    const float* x = &b.x[size_t(t * H)];
    for (int64_t i = 0; i < H; ++i) {
      if (payload == DispatchPayload::F32) row[size_t(i)] = x[i];
      if (payload == DispatchPayload::BF16) row[size_t(i)] = bf16_to_f32(f32_to_bf16(x[i]));
    }
    if (payload == DispatchPayload::FP8)
      for (int64_t b0 = 0; b0 < H; b0 += 128) {
        float amax = 0;
        for (int64_t i = b0; i < std::min(H, b0 + 128); ++i) amax = std::max(amax, std::fabs(x[i]));
        const float s = std::max(amax, 1e-4f) / 448.0f;
        for (int64_t i = b0; i < std::min(H, b0 + 128); ++i) row[size_t(i)] = fp8_e4m3_to_f32(f32_to_fp8_e4m3(x[i] / s)) * s;
      }
    for (int j = 0; j < b.topk; ++j) {
      const int64_t e = b.idx[size_t(t * b.topk + j)];
      if (e < 0) continue;
      if (identity)
        out = row;
      else
        toy_expert(int(e), row.data(), out.data(), H);
      const float w = b.weights[size_t(t * b.topk + j)];
      for (int64_t i = 0; i < H; ++i) y[size_t(t * H + i)] += w * out[size_t(i)];
    }
  }
  return y;
}

// DeepEP tests/utils.py calc_diff: both sides shifted by +1, in float64.
inline double calc_diff(const float* x, const double* y, size_t n) {
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < n; ++i) {
    const double a = double(x[i]) + 1.0, b = y[i] + 1.0;
    xy += a * b;
    xx += a * a;
    yy += b * b;
  }
  return 1.0 - 2.0 * xy / (xx + yy);
}

}  // namespace deepmoe::testing
