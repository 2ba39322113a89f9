// The trainer's numerical building blocks, each with its forward and hand-written backward, templated on the
// scalar: `float` is what training runs (GEMMs through kernels/gemm.h), `double` is the FP64 twin that the
// gradient checks difference (tests/train). Backward functions ACCUMULATE into gradient buffers (+=), because
// most activations fan out (residual stream, shared experts, MTP), so callers zero them once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace deepmoe {

class ThreadPool;

// How a block's projections multiply (DeepSeek-V3 §3.3): the embedding, output head, norms, gate and attention
// core always stay in FP32 whatever this says.
enum class Precision {
  FP32,
  BF16,  // operands rounded to BF16, FP32 accumulation (the baseline the FP8 recipe is compared with)
  FP8,   // E4M3: forward w8a8 (1x128 activation tiles, 128x128 weight blocks); dgrad w8a8 on the transposed
         // weight; wgrad on both operands quantized in 128x1 tiles (per channel over 128 tokens)
};
const char* precision_name(Precision p);
Precision parse_precision(const std::string& name);  // fp32 | bf16 | fp8, else Error naming --precision

// C[m, n] = A[m, k] · B[n, k]ᵀ (row-major, full precision).
template <class R>
void matmul_nt(const R* a, int64_t m, int64_t k, const R* b, int64_t n, R* c, ThreadPool* pool);
// out[cols, rows] = in[rows, cols]ᵀ.
template <class R>
void transpose(const R* in, int64_t rows, int64_t cols, R* out);

// A projection y[m, n] = x[m, k] · W[n, k]ᵀ in `precision` (FP64 ignores it).
template <class R>
void linear_forward(const R* x, int64_t m, const R* w, int64_t n, int64_t k, R* y, Precision precision,
                    ThreadPool* pool);
// dx[m, k] += dy · W (when dx is not null); dw[n, k] += dyᵀ · x (when dw is not null: a frozen weight).
template <class R>
void linear_backward(const R* x, int64_t m, const R* w, int64_t n, int64_t k, const R* dy, R* dx, R* dw,
                     Precision precision, ThreadPool* pool);

// y = w ⊙ x / sqrt(mean(x²) + eps) per row of `dim` (row strides given); rstd[r] keeps 1/sqrt(...) for backward.
template <class R>
void rmsnorm_forward(const R* x, int64_t x_stride, int64_t rows, int64_t dim, const R* w, double eps, R* y,
                     int64_t y_stride, R* rstd);
template <class R>
void rmsnorm_backward(const R* x, int64_t x_stride, int64_t rows, int64_t dim, const R* w, const R* rstd,
                      const R* dy, int64_t dy_stride, R* dx, int64_t dx_stride, R* dw);

// Rotates interleaved pairs of rows × rope_dim values in place (kernels/rope.h semantics: FP32 angle
// position · freq, cos/sin scaled by `amplitude`); inverse = the transpose, which is the backward pass.
template <class R>
void rope_rotate(R* x, int64_t rows, int64_t row_stride, int64_t rows_per_position, const int64_t* positions,
                 const std::vector<float>& freqs, float amplitude, bool inverse);

// out = silu(g) · u; backward accumulates dg, du.
template <class R>
void swiglu_forward(const R* g, const R* u, int64_t n, R* out);
template <class R>
void swiglu_backward(const R* g, const R* u, const R* dout, int64_t n, R* dg, R* du);

// Mean cross-entropy of rows whose target is >= 0, times `weight`: returns the summed (unweighted) loss and the
// count of rows; writes dlogits = weight · (softmax − onehot) / count (0 for ignored rows).
template <class R>
double cross_entropy(const R* logits, int64_t rows, int64_t vocab, const int32_t* targets, double weight,
                     R* dlogits, int64_t* counted, ThreadPool* pool);

// Distillation of a teacher's distribution into the model's: the summed KL(softmax(teacher) ‖ softmax(logits))
// over the rows (nats), and dlogits = weight · (softmax(logits) − softmax(teacher)) / rows, the gradient of
// weight × the mean KL (the teacher's entropy does not depend on the logits, so it is also the gradient of the
// soft-target cross-entropy). No gradient flows into the teacher.
template <class R>
double distillation_kl(const R* logits, const R* teacher, int64_t rows, int64_t vocab, double weight, R* dlogits,
                       ThreadPool* pool);

}  // namespace deepmoe
