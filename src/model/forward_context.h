// What every part of the forward pass needs besides its weights: the config, how to multiply, the attention form,
// the thread pool and the RoPE tables (computed once at load).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/buffer_cache.h"
#include "kernels/gemm.h"

namespace deepmoe {

struct ModelConfig;
class ThreadPool;

// MLA form (reference §1.5). Both read the same latent cache and agree to FP32 rounding.
enum class AttentionMode {
  Naive,     // decompress K/V of the whole context through kv_b_proj, attend per head over qk/v-dim keys/values
  Absorbed,  // W_UK folded into q, attend over the kv_lora_rank latent, W_UV after (model.py's default)
};

struct ForwardContext {
  const ModelConfig* config = nullptr;
  GemmMode gemm = GemmMode::W8A32;
  AttentionMode attention = AttentionMode::Absorbed;
  ThreadPool* pool = nullptr;
  std::vector<float> rope_freqs;  // [qk_rope_head_dim / 2]
  float rope_amplitude = 1.0f;
  float softmax_scale = 1.0f;
  float rms_eps = 1e-6f;
};

// An activation buffer left uninitialized: every user writes it completely before reading it, so zeroing it on
// every layer would be wasted work. Recycled through core/buffer_cache.h (no page faults after the first call)
// and 64-byte aligned, so the GEMM reads it in place instead of repacking it.
class Scratch {
 public:
  explicit Scratch(int64_t n) : n_(static_cast<size_t>(n)) { bytes_.reset(n_ * sizeof(float)); }
  float* data() { return reinterpret_cast<float*>(bytes_.data()); }
  const float* data() const { return reinterpret_cast<const float*>(bytes_.data()); }
  float& operator[](size_t i) { return data()[i]; }
  const float& operator[](size_t i) const { return data()[i]; }
  size_t size() const { return n_; }

 private:
  size_t n_;
  CachedBytes bytes_;
};

// y[T, w.n] = x[T, w.k] · wᵀ (kernels/gemm.h with the context's mode and pool).
void linear(const ForwardContext& ctx, const float* x, int64_t T, const WeightMatrix& w, float* y);

}  // namespace deepmoe
