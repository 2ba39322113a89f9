#include "kernels/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace deepmoe {

double yarn_mscale(double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

std::vector<float> rope_frequencies(const RopeParams& p) {
  const int half = p.rope_dim / 2;
  std::vector<float> freqs(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i)
    freqs[size_t(i)] = 1.0f / std::pow(float(p.theta), float(2 * i) / float(p.rope_dim));
  if (!p.yarn) return freqs;
  // find_correction_dim / find_correction_range / linear_ramp_factor of model.py.
  auto correction_dim = [&](double rotations) {
    return p.rope_dim * std::log(double(p.original_max_position) / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(p.theta));
  };
  double low = std::max(std::floor(correction_dim(p.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(p.beta_slow)), double(p.rope_dim - 1));
  if (low == high) high += 0.001;
  for (int i = 0; i < half; ++i) {
    float ramp = std::clamp((float(i) - float(low)) / (float(high) - float(low)), 0.0f, 1.0f);
    float smooth = 1.0f - ramp;
    float f = freqs[size_t(i)];
    freqs[size_t(i)] = f / float(p.factor) * (1.0f - smooth) + f * smooth;
  }
  return freqs;
}

float rope_amplitude(const RopeParams& p) {
  if (!p.yarn || p.mscale_all_dim == 0.0) return 1.0f;
  return float(yarn_mscale(p.factor, p.mscale) / yarn_mscale(p.factor, p.mscale_all_dim));
}

double attention_softmax_scale(const RopeParams& p, int qk_head_dim) {
  double scale = 1.0 / std::sqrt(double(qk_head_dim));
  if (p.yarn) {
    // HF scales by mscale_all_dim; model.py by mscale (they are equal in every released config).
    double m = yarn_mscale(p.factor, p.mscale_all_dim != 0.0 ? p.mscale_all_dim : p.mscale);
    scale *= m * m;
  }
  return scale;
}

void apply_rope(float* x, int64_t rows, int64_t row_stride, int64_t rows_per_position, const int64_t* positions,
                const std::vector<float>& freqs, float amplitude) {
  const int64_t half = int64_t(freqs.size());
  int64_t last_pos = -1;
  thread_local std::vector<float> cs;
  cs.resize(size_t(2 * half));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t pos = positions[r / rows_per_position];
    if (pos != last_pos || r == 0) {
      for (int64_t j = 0; j < half; ++j) {
        // model.py: freqs_cis = polar(1, outer(t, freqs)) — the angle is an FP32 product; cos/sin of it are
        // evaluated in FP64 and rounded once.
        double angle = double(float(pos) * freqs[size_t(j)]);
        cs[size_t(2 * j)] = float(std::cos(angle)) * amplitude;
        cs[size_t(2 * j + 1)] = float(std::sin(angle)) * amplitude;
      }
      last_pos = pos;
    }
    float* v = x + r * row_stride;
    for (int64_t j = 0; j < half; ++j) {
      float c = cs[size_t(2 * j)], s = cs[size_t(2 * j + 1)];
      float a = v[2 * j], b = v[2 * j + 1];
      v[2 * j] = a * c - b * s;
      v[2 * j + 1] = a * s + b * c;
    }
  }
}

void apply_rope_ref(float* x, int64_t rows, int64_t row_stride, int64_t rows_per_position, const int64_t* positions,
                    const std::vector<float>& freqs, float amplitude) {
  const int64_t half = int64_t(freqs.size());
  for (int64_t r = 0; r < rows; ++r) {
    int64_t pos = positions[r / rows_per_position];
    float* v = x + r * row_stride;
    for (int64_t j = 0; j < half; ++j) {
      double angle = double(float(pos) * freqs[size_t(j)]);  // FP32 angle, as model.py
      double c = std::cos(angle) * amplitude, s = std::sin(angle) * amplitude;
      double a = v[2 * j], b = v[2 * j + 1];
      v[2 * j] = float(a * c - b * s);
      v[2 * j + 1] = float(a * s + b * c);
    }
  }
}

}  // namespace deepmoe
