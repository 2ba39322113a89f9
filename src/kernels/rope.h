// Rotary position embedding with YaRN frequency scaling, as DeepSeek-V3's inference/model.py does it
// (reference §1.4: precompute_freqs_cis, apply_rotary_emb).
//
// - Frequencies: freq_i = 1/θ^(2i/d), i < d/2. With YaRN, low = max(floor(cd(β_fast)), 0),
//   high = min(ceil(cd(β_slow)), d−1), cd(r) = d·ln(L_orig/(2πr))/(2 ln θ); smooth_i = 1 − clamp((i−low)/(high−low))
//   and freq_i ← freq_i/factor·(1−smooth_i) + freq_i·smooth_i.
// - The rotation acts on INTERLEAVED pairs (x[2j], x[2j+1]) (view_as_complex; HF rope_interleave). The angle
//   is the FP32 product position · freq_i (torch.outer in float32), as model.py computes it.
// - HF's DeepseekV3YarnRotaryEmbedding also multiplies cos/sin by mscale(factor, mscale)/mscale(factor,
//   mscale_all_dim) — 1 for every released config, kept here for exactness — and the attention softmax scale by
//   mscale(factor, mscale_all_dim)², mscale(s, m) = 0.1·m·ln(s) + 1 for s > 1 (V3: 192^-0.5 · 1.368888² =
//   0.1352338).
#pragma once

#include <cstdint>
#include <vector>

namespace deepmoe {

struct RopeParams {
  int rope_dim = 64;                 // qk_rope_head_dim
  double theta = 10000.0;            // rope_theta
  bool yarn = false;                 // rope_scaling.type == "yarn"
  double factor = 1.0;               // rope_scaling.factor
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 1.0, mscale_all_dim = 0.0;  // rope_scaling.mscale / mscale_all_dim (0 = absent)
  int64_t original_max_position = 4096;       // rope_scaling.original_max_position_embeddings
};

// 0.1·m·ln(s) + 1 when s > 1, else 1 (yarn_get_mscale).
double yarn_mscale(double scale, double m);

// The d/2 rotation frequencies (radians per position), computed in FP32 as model.py does.
std::vector<float> rope_frequencies(const RopeParams& p);
// The amplitude applied to cos/sin (1 unless mscale differs from mscale_all_dim).
float rope_amplitude(const RopeParams& p);
// qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)² under YaRN.
double attention_softmax_scale(const RopeParams& p, int qk_head_dim);

// Rotates `rows` vectors of rope_dim values in place: row r starts at x + r·row_stride and belongs to position
// positions[r / rows_per_position] (so q_pe [T, H, d] passes rows_per_position = H).
void apply_rope(float* x, int64_t rows, int64_t row_stride, int64_t rows_per_position, const int64_t* positions,
                const std::vector<float>& freqs, float amplitude);
// The specification: the same FP32 angle, cos/sin and rotation in FP64.
void apply_rope_ref(float* x, int64_t rows, int64_t row_stride, int64_t rows_per_position, const int64_t* positions,
                    const std::vector<float>& freqs, float amplitude);

}  // namespace deepmoe
