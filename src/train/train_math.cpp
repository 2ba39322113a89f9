#include "train/train_math.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/gemm.h"
#include "kernels/quantize.h"
#include "train/temp_buffer.h"

namespace deepmoe {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::FP32: return "fp32";
    case Precision::BF16: return "bf16";
    case Precision::FP8: return "fp8";
  }
  return "?";
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::FP32;
  if (name == "bf16") return Precision::BF16;
  if (name == "fp8") return Precision::FP8;
  throw Error("unknown precision '" + name + "' (fp32, bf16 or fp8)", {"", "", "--precision"});
}

namespace {

// Rows run in fixed contiguous chunks: every output element has one reduction order whatever the thread count.
void for_rows(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  parallel_for(pool, n, fn, 16);
}

std::vector<float> rounded_bf16(const float* x, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = bf16_to_f32(f32_to_bf16(x[i]));
  return out;
}

WeightMatrix f32_matrix(const float* w, int64_t n, int64_t k) { return {DType::F32, n, k, w, nullptr}; }

// An FP8 copy of w [n, k] in 128x128 blocks.
struct Fp8Weight {
  std::vector<uint8_t> q;
  std::vector<float> scale;
  WeightMatrix matrix;
  Fp8Weight(const float* w, int64_t n, int64_t k, ThreadPool* pool)
      : q(static_cast<size_t>(n * k)), scale(static_cast<size_t>(quant_blocks(n) * quant_blocks(k))) {
    quantize_weight_128x128(w, n, k, q.data(), scale.data(), pool);
    matrix = {DType::F8_E4M3, n, k, q.data(), scale.data()};
  }
};

// x [m, k] quantized to E4M3 in 128x1 tiles (one scale per channel per 128 rows) and dequantized: the values an
// FP8 GEMM over the transposed operand multiplies. `from_1x128`: x is first quantized in 1x128 tiles, as the
// forward pass stores it, and re-tiled (DeepSeek-V3 §3.3: the cached FP8 activation is transposed for Wgrad).
std::vector<float> fp8_128x1_values(const float* x, int64_t m, int64_t k, bool from_1x128) {
  std::vector<uint8_t> q(static_cast<size_t>(m * k)), q2(static_cast<size_t>(m * k));
  std::vector<float> s(static_cast<size_t>(quant_blocks(m) * k)), out(static_cast<size_t>(m * k));
  if (from_1x128) {
    std::vector<float> s1(static_cast<size_t>(m * quant_blocks(k)));
    quantize_act_1x128(x, m, k, q2.data(), s1.data(), false);
    requantize_1x128_to_128x1(q2.data(), s1.data(), m, k, q.data(), s.data(), false);
  } else {
    quantize_act_128x1(x, m, k, q.data(), s.data(), false);
  }
  dequantize_act_128x1(q.data(), s.data(), m, k, out.data());
  return out;
}

// Blocks of 32 rows per task; each block writes its own columns of `out`.
template <class R>
void transpose_on(const R* in, int64_t rows, int64_t cols, R* out, ThreadPool* pool) {
  constexpr int64_t B = 32;
  parallel_for(pool, (rows + B - 1) / B, [&](int64_t b0, int64_t b1) {
    for (int64_t r0 = b0 * B; r0 < std::min(rows, b1 * B); r0 += B)
      for (int64_t c0 = 0; c0 < cols; c0 += B)
        for (int64_t r = r0; r < std::min(rows, r0 + B); ++r)
          for (int64_t c = c0; c < std::min(cols, c0 + B); ++c) out[c * rows + r] = in[r * cols + c];
  });
}

}  // namespace

template <class R>
void transpose(const R* in, int64_t rows, int64_t cols, R* out) {
  transpose_on(in, rows, cols, out, nullptr);
}

template <class R>
void matmul_nt(const R* a, int64_t m, int64_t k, const R* b, int64_t n, R* c, ThreadPool* pool) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    std::fill(c, c + m * n, R(0));
    return;
  }
  if constexpr (std::is_same_v<R, float>) {
    gemm(a, m, f32_matrix(b, n, k), c, GemmMode::W8A32, pool);
  } else {
    for_rows(pool, m, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = 0; j < n; ++j) {
          R s = 0;
          for (int64_t t = 0; t < k; ++t) s += a[i * k + t] * b[j * k + t];
          c[i * n + j] = s;
        }
    });
  }
}

template <class R>
void linear_forward(const R* x, int64_t m, const R* w, int64_t n, int64_t k, R* y, Precision precision,
                    ThreadPool* pool) {
  if (m == 0) return;
  if constexpr (std::is_same_v<R, float>) {
    if (precision == Precision::BF16) {
      const auto xb = rounded_bf16(x, m * k), wb = rounded_bf16(w, n * k);
      return matmul_nt(xb.data(), m, k, wb.data(), n, y, pool);
    }
    if (precision == Precision::FP8) {
      const Fp8Weight wq(w, n, k, pool);
      return gemm(x, m, wq.matrix, y, GemmMode::W8A8, pool);
    }
  }
  matmul_nt(x, m, k, w, n, y, pool);
}

template <class R>
void linear_backward(const R* x, int64_t m, const R* w, int64_t n, int64_t k, const R* dy, R* dx, R* dw,
                     Precision precision, ThreadPool* pool) {
  if (m == 0) return;
  TempBuffer<R> wt(n * k), tmp(std::max(m * k, n * k));
  // dgrad: dx[m, k] += dy[m, n] · W[n, k] = dy · (Wᵀ)[k, n]ᵀ
  if (dx) {
    transpose_on(w, n, k, wt.data(), pool);
    bool done = false;
    if constexpr (std::is_same_v<R, float>) {
      if (precision == Precision::BF16) {
        const auto db = rounded_bf16(dy, m * n), wb = rounded_bf16(wt.data(), n * k);
        matmul_nt(db.data(), m, n, wb.data(), k, tmp.data(), pool);
        done = true;
      } else if (precision == Precision::FP8) {
        const Fp8Weight wq(wt.data(), k, n, pool);  // the same 128x128 blocks, transposed
        gemm(dy, m, wq.matrix, tmp.data(), GemmMode::W8A8, pool);  // dy quantized 1x128 along n
        done = true;
      }
    }
    if (!done) matmul_nt(dy, m, n, wt.data(), k, tmp.data(), pool);
    for (int64_t i = 0; i < m * k; ++i) dx[i] += tmp[size_t(i)];
  }
  // wgrad: dw[n, k] += dyᵀ[n, m] · x[m, k] = dyᵀ · (xᵀ)[k, m]ᵀ
  if (!dw) return;
  TempBuffer<R> dyt(n * m), xt(k * m);
  if constexpr (std::is_same_v<R, float>) {
    if (precision == Precision::BF16) {
      const auto db = rounded_bf16(dy, m * n), xb = rounded_bf16(x, m * k);
      transpose_on(db.data(), m, n, dyt.data(), pool);
      transpose_on(xb.data(), m, k, xt.data(), pool);
    } else if (precision == Precision::FP8) {
      const auto dq = fp8_128x1_values(dy, m, n, false), xq = fp8_128x1_values(x, m, k, true);
      transpose_on(dq.data(), m, n, dyt.data(), pool);
      transpose_on(xq.data(), m, k, xt.data(), pool);
    } else {
      transpose_on(dy, m, n, dyt.data(), pool);
      transpose_on(x, m, k, xt.data(), pool);
    }
  } else {
    transpose_on(dy, m, n, dyt.data(), pool);
    transpose_on(x, m, k, xt.data(), pool);
  }
  matmul_nt(dyt.data(), n, m, xt.data(), k, tmp.data(), pool);
  for (int64_t i = 0; i < n * k; ++i) dw[i] += tmp[size_t(i)];
}

template <class R>
void rmsnorm_forward(const R* x, int64_t x_stride, int64_t rows, int64_t dim, const R* w, double eps, R* y,
                     int64_t y_stride, R* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const R* xr = x + r * x_stride;
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += double(xr[j]) * double(xr[j]);
    const R inv = R(1.0 / std::sqrt(ss / double(dim) + eps));
    rstd[r] = inv;
    R* yr = y + r * y_stride;
    for (int64_t j = 0; j < dim; ++j) yr[j] = w[j] * (xr[j] * inv);
  }
}

template <class R>
void rmsnorm_backward(const R* x, int64_t x_stride, int64_t rows, int64_t dim, const R* w, const R* rstd,
                      const R* dy, int64_t dy_stride, R* dx, int64_t dx_stride, R* dw) {
  // y_j = w_j x_j r, r = (mean(x²) + eps)^-1/2:  dx_j = r (w_j dy_j) − x_j r³ Σ_i (w_i dy_i x_i) / dim
  for (int64_t row = 0; row < rows; ++row) {
    const R* xr = x + row * x_stride;
    const R* g = dy + row * dy_stride;
    const double r = double(rstd[row]);
    double dot = 0;
    for (int64_t j = 0; j < dim; ++j) {
      dot += double(w[j]) * double(g[j]) * double(xr[j]);
      dw[j] += g[j] * xr[j] * R(r);
    }
    const double c = r * r * r * dot / double(dim);
    R* d = dx + row * dx_stride;
    for (int64_t j = 0; j < dim; ++j) d[j] += R(r * double(w[j]) * double(g[j]) - double(xr[j]) * c);
  }
}

template <class R>
void rope_rotate(R* x, int64_t rows, int64_t row_stride, int64_t rows_per_position, const int64_t* positions,
                 const std::vector<float>& freqs, float amplitude, bool inverse) {
  const int64_t half = int64_t(freqs.size());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pos = positions[r / rows_per_position];
    R* v = x + r * row_stride;
    for (int64_t j = 0; j < half; ++j) {
      const double angle = double(float(pos) * freqs[size_t(j)]);  // the FP32 angle, as kernels/rope.h
      R c, s;
      if constexpr (std::is_same_v<R, float>) {
        c = float(std::cos(angle)) * amplitude;
        s = float(std::sin(angle)) * amplitude;
      } else {
        c = std::cos(angle) * double(amplitude);
        s = std::sin(angle) * double(amplitude);
      }
      if (inverse) s = -s;
      const R a = v[2 * j], b = v[2 * j + 1];
      v[2 * j] = a * c - b * s;
      v[2 * j + 1] = a * s + b * c;
    }
  }
}

template <class R>
void swiglu_forward(const R* g, const R* u, int64_t n, R* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (R(1) + std::exp(-g[i])) * u[i];
}

template <class R>
void swiglu_backward(const R* g, const R* u, const R* dout, int64_t n, R* dg, R* du) {
  for (int64_t i = 0; i < n; ++i) {
    const R sig = R(1) / (R(1) + std::exp(-g[i]));
    const R silu = g[i] * sig;
    du[i] += dout[i] * silu;
    dg[i] += dout[i] * u[i] * (sig * (R(1) + g[i] * (R(1) - sig)));
  }
}

template <class R>
double cross_entropy(const R* logits, int64_t rows, int64_t vocab, const int32_t* targets, double weight,
                     R* dlogits, int64_t* counted, ThreadPool* pool) {
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r) n += targets[r] >= 0;
  *counted = n;
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
  const double scale = n > 0 ? weight / double(n) : 0.0;
  for_rows(pool, rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const R* l = logits + r * vocab;
      R* d = dlogits + r * vocab;
      if (targets[r] < 0) {
        std::fill(d, d + vocab, R(0));
        continue;
      }
      double mx = double(l[0]);
      for (int64_t j = 1; j < vocab; ++j) mx = std::max(mx, double(l[j]));
      double sum = 0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(l[j]) - mx);
      const double lse = mx + std::log(sum);
      row_loss[size_t(r)] = lse - double(l[targets[r]]);
      for (int64_t j = 0; j < vocab; ++j) d[j] = R(std::exp(double(l[j]) - lse) * scale);
      d[targets[r]] -= R(scale);
    }
  });
  double total = 0;
  for (double v : row_loss) total += v;
  return total;
}

template <class R>
double distillation_kl(const R* logits, const R* teacher, int64_t rows, int64_t vocab, double weight, R* dlogits,
                       ThreadPool* pool) {
  std::vector<double> row_kl(static_cast<size_t>(rows), 0.0);
  const double scale = rows > 0 ? weight / double(rows) : 0.0;
  auto log_softmax_lse = [vocab](const R* l) {
    double mx = double(l[0]);
    for (int64_t j = 1; j < vocab; ++j) mx = std::max(mx, double(l[j]));
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(l[j]) - mx);
    return mx + std::log(sum);
  };
  for_rows(pool, rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const R* l = logits + r * vocab;
      const R* t = teacher + r * vocab;
      R* d = dlogits + r * vocab;
      const double lse = log_softmax_lse(l), tlse = log_softmax_lse(t);
      double kl = 0;
      for (int64_t j = 0; j < vocab; ++j) {
        const double log_p = double(t[j]) - tlse, log_q = double(l[j]) - lse, p = std::exp(log_p);
        kl += p * (log_p - log_q);
        d[j] = R((std::exp(log_q) - p) * scale);
      }
      row_kl[size_t(r)] = kl;
    }
  });
  double total = 0;
  for (double v : row_kl) total += v;
  return total;
}

#define DEEPMOE_TRAIN_MATH(R)                                                                                      \
  template void matmul_nt<R>(const R*, int64_t, int64_t, const R*, int64_t, R*, ThreadPool*);                     \
  template void transpose<R>(const R*, int64_t, int64_t, R*);                                                     \
  template void linear_forward<R>(const R*, int64_t, const R*, int64_t, int64_t, R*, Precision, ThreadPool*);     \
  template void linear_backward<R>(const R*, int64_t, const R*, int64_t, int64_t, const R*, R*, R*, Precision,    \
                                   ThreadPool*);                                                                  \
  template void rmsnorm_forward<R>(const R*, int64_t, int64_t, int64_t, const R*, double, R*, int64_t, R*);       \
  template void rmsnorm_backward<R>(const R*, int64_t, int64_t, int64_t, const R*, const R*, const R*, int64_t,   \
                                    R*, int64_t, R*);                                                             \
  template void rope_rotate<R>(R*, int64_t, int64_t, int64_t, const int64_t*, const std::vector<float>&, float,   \
                               bool);                                                                             \
  template void swiglu_forward<R>(const R*, const R*, int64_t, R*);                                               \
  template void swiglu_backward<R>(const R*, const R*, const R*, int64_t, R*, R*);                                \
  template double cross_entropy<R>(const R*, int64_t, int64_t, const int32_t*, double, R*, int64_t*, ThreadPool*); \
  template double distillation_kl<R>(const R*, const R*, int64_t, int64_t, double, R*, ThreadPool*);
DEEPMOE_TRAIN_MATH(float)
DEEPMOE_TRAIN_MATH(double)

}  // namespace deepmoe
