// The trainable state of a DeepSeek-V3 model: one FP32 (or FP64, for gradient checks) tensor per Hugging Face
// checkpoint tensor (checkpoint/checkpoint_layout.h names and shapes, unquantized; the MTP layer's stored copies of
// the embedding and head are not separate parameters — they are shared, as in the paper), each with its
// gradient. The gates' e_score_correction_bias lives here too but is not trained by gradients: the
// auxiliary-loss-free balancing moves it (trainer.h).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "checkpoint/checkpoint_layout.h"
#include "model/config.h"

namespace deepmoe {

template <class R>
struct Param {
  TensorSpec spec;  // name, shape, role (dtype is what the checkpoint stores, not this tensor's)
  std::vector<R> value, grad;
  bool frozen = false;  // kept as it is: no gradient, no AdamW update (`train --mtp-only` freezes the main model)
  int64_t rows() const { return spec.shape[0]; }
  int64_t cols() const { return spec.shape.size() == 2 ? spec.shape[1] : 1; }
  int64_t numel() const { return int64_t(value.size()); }
  // AdamW decays matrices only (projections, gate, embedding, head), not norms or the correction bias.
  bool decays() const { return spec.shape.size() == 2; }
  bool trained() const { return spec.role != TensorRole::CorrectionBias && !frozen; }
};

template <class R>
class ParamStore {
 public:
  ParamStore() = default;
  // Norm weights 1, correction biases 0, everything else N(0, init_std²) from a stream keyed by (seed, name), so
  // the values do not depend on creation order.
  static ParamStore init(const ModelConfig& config, uint64_t seed, double init_std);
  // The same parameters with values converted to S (gradients zeroed).
  template <class S>
  ParamStore<S> cast() const;

  Param<R>& at(const std::string& name);
  const Param<R>& at(const std::string& name) const;
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  std::vector<Param<R>>& all() { return params_; }
  const std::vector<Param<R>>& all() const { return params_; }
  const ModelConfig& config() const { return config_; }
  void zero_grad();
  int64_t numel() const;

 private:
  void add(Param<R> p);
  ModelConfig config_;
  std::vector<Param<R>> params_;
  std::unordered_map<std::string, size_t> index_;
  template <class S>
  friend class ParamStore;
};

}  // namespace deepmoe
