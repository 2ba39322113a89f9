// AdamW with FP32 master weights and moments (paper §4.2: β1 0.9, β2 0.95, weight decay 0.1, decoupled from the
// gradient), the learning-rate schedule (linear warmup, then cosine decay to a floor), and global-norm gradient
// clipping.
#pragma once

#include <cstdint>
#include <vector>

#include "train/param_store.h"

namespace deepmoe {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// Warmup from lr/warmup to lr over `warmup` steps, then cosine from lr to lr · min_ratio at the last step.
double learning_rate(int64_t step, int64_t total_steps, int64_t warmup, double lr, double min_ratio);

// Scales every trained gradient by min(1, max_norm / ‖g‖₂) and returns ‖g‖₂ before clipping (max_norm <= 0: no
// clipping).
double clip_gradients(ParamStore<float>& ps, double max_norm);

class AdamW {
 public:
  AdamW() = default;
  AdamW(const ParamStore<float>& ps, AdamWOptions options);
  // One update of every trained parameter with this step's gradients.
  void step(ParamStore<float>& ps, double lr);
  int64_t steps() const { return steps_; }
  std::vector<std::vector<float>>& first_moments() { return m_; }
  std::vector<std::vector<float>>& second_moments() { return v_; }
  void set_steps(int64_t s) { steps_ = s; }

 private:
  AdamWOptions options_;
  std::vector<std::vector<float>> m_, v_;  // per parameter, in ParamStore order
  int64_t steps_ = 0;
};

}  // namespace deepmoe
