#include "parallel/expert_load_stats.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace deepmoe {

ExpertLoadStats::ExpertLoadStats(int n_layers, int n_logical, int window_batches)
    : n_layers_(n_layers), n_logical_(n_logical), window_(window_batches) {
  if (n_layers < 1 || n_logical < 1 || window_batches < 1)
    throw Error("expert load statistics need positive layers, experts and window, got " + std::to_string(n_layers) +
                ", " + std::to_string(n_logical) + ", " + std::to_string(window_batches));
  ring_.assign(size_t(n_layers) * size_t(window_) * size_t(n_logical), 0);
  recorded_.assign(static_cast<size_t>(n_layers), 0);
}

void ExpertLoadStats::record(int layer, std::span<const int64_t> tokens_per_logical) {
  DEEPMOE_CHECK(layer >= 0 && layer < n_layers_, "layer " + std::to_string(layer));
  DEEPMOE_CHECK(tokens_per_logical.size() == size_t(n_logical_));
  int64_t slot = recorded_[size_t(layer)]++ % window_;
  std::copy(tokens_per_logical.begin(), tokens_per_logical.end(),
            ring_.begin() + (int64_t(layer) * window_ + slot) * n_logical_);
}

int ExpertLoadStats::batches_in_window(int layer) const {
  return int(std::min<int64_t>(recorded_[size_t(layer)], window_));
}

std::vector<int64_t> ExpertLoadStats::window_load(int layer) const {
  DEEPMOE_CHECK(layer >= 0 && layer < n_layers_, "layer " + std::to_string(layer));
  std::vector<int64_t> sum(static_cast<size_t>(n_logical_), 0);
  for (int w = 0; w < window_; ++w) {
    const int64_t* row = &ring_[(size_t(layer) * size_t(window_) + size_t(w)) * size_t(n_logical_)];
    for (int e = 0; e < n_logical_; ++e) sum[size_t(e)] += row[e];
  }
  return sum;
}

std::vector<std::vector<double>> ExpertLoadStats::eplb_weight() const {
  std::vector<std::vector<double>> w(static_cast<size_t>(n_layers_));
  for (int l = 0; l < n_layers_; ++l) {
    auto s = window_load(l);
    w[size_t(l)].assign(s.begin(), s.end());
  }
  return w;
}

void ExpertLoadStats::clear() {
  std::fill(ring_.begin(), ring_.end(), 0);
  std::fill(recorded_.begin(), recorded_.end(), 0);
}

}  // namespace deepmoe
