#include "train/adamw.h"

#include <cmath>
#include <numbers>

namespace deepmoe {

double learning_rate(int64_t step, int64_t total_steps, int64_t warmup, double lr, double min_ratio) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  const int64_t span = std::max<int64_t>(total_steps - warmup - 1, 1);
  const double progress = std::min(1.0, double(step - warmup) / double(span));
  return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(std::numbers::pi * progress)));
}

double clip_gradients(ParamStore<float>& ps, double max_norm) {
  double sq = 0;
  for (const auto& p : ps.all())
    if (p.trained())
      for (float g : p.grad) sq += double(g) * double(g);
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = float(max_norm / norm);
    for (auto& p : ps.all())
      if (p.trained())
        for (float& g : p.grad) g *= scale;
  }
  return norm;
}

AdamW::AdamW(const ParamStore<float>& ps, AdamWOptions options) : options_(options) {
  for (const auto& p : ps.all()) {
    m_.emplace_back(p.value.size(), 0.0f);
    v_.emplace_back(p.value.size(), 0.0f);
  }
}

void AdamW::step(ParamStore<float>& ps, double lr) {
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1 - std::pow(b1, double(steps_)), c2 = 1 - std::pow(b2, double(steps_));
  auto& params = ps.all();
  for (size_t i = 0; i < params.size(); ++i) {
    auto& p = params[i];
    if (!p.trained()) continue;
    const float decay = p.decays() ? float(1 - lr * options_.weight_decay) : 1.0f;
    float* m = m_[i].data();
    float* v = v_[i].data();
    const float fb1 = float(b1), fb2 = float(b2), step_size = float(lr / c1), inv_c2 = float(1 / c2),
                eps = float(options_.eps);
    for (size_t j = 0; j < p.value.size(); ++j) {
      const float g = p.grad[j];
      m[j] = fb1 * m[j] + (1 - fb1) * g;
      v[j] = fb2 * v[j] + (1 - fb2) * g * g;
      p.value[j] = p.value[j] * decay - step_size * m[j] / (std::sqrt(v[j] * inv_c2) + eps);
    }
  }
}

}  // namespace deepmoe
