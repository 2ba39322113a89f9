// Load statistics per MoE layer per logical expert over a moving window of batches: the input of
// EPLB's `weight` ("e.g. a moving average of history", EPLB README). Dispatch records the GLOBAL token count per
// logical expert (summed over all ranks in its layout step), so every rank holds identical statistics and can
// run EPLB to the same placement without further communication.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace deepmoe {

class ExpertLoadStats {
 public:
  ExpertLoadStats(int n_layers, int n_logical, int window_batches);

  int n_layers() const { return n_layers_; }
  int n_logical() const { return n_logical_; }
  int window_batches() const { return window_; }

  // Adds one batch of counts for `layer`; the oldest batch of that layer drops out once the window is full.
  void record(int layer, std::span<const int64_t> tokens_per_logical);
  // Batches currently in `layer`'s window (at most window_batches()).
  int batches_in_window(int layer) const;
  // Tokens per logical expert summed over the window, [n_logical].
  std::vector<int64_t> window_load(int layer) const;
  // All layers, as EPLB's weight [n_layers][n_logical].
  std::vector<std::vector<double>> eplb_weight() const;
  void clear();

 private:
  int n_layers_, n_logical_, window_;
  std::vector<int64_t> ring_;  // [n_layers, window, n_logical]
  std::vector<int64_t> recorded_;  // [n_layers] batches recorded in total
};

}  // namespace deepmoe
