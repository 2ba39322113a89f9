// A plain FP64 reference of the DeepSeek-V3 / V2 forward, written straight from the equations of
// reference/deepseek_v3_system.md §1 (model.py; HF MoEGate for V2) with dense loops and the NAIVE MLA form
// (decompressed K/V). It reads the same checkpoint folder, dequantizes every weight exactly (q · scale_inv) to
// double, and recomputes the whole sequence from position 0 each call — no cache, no batching, no threads.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/safetensors.h"

namespace deepmoe::testing_util {

struct ReferenceOutput {
  std::vector<double> logits;  // [S, vocab]
  std::vector<double> hidden;  // [S, hidden] last layer output before the final norm
};

class ReferenceModel {
 public:
  explicit ReferenceModel(const std::string& dir);
  const ModelConfig& config() const { return cfg_; }

  // Emulate w8a8: the input of every FP8 projection is quantized per token per 128 channels to e4m3 first
  // (act_quant, reference §2: s = max(amax, 1e-4)/448, q = e4m3(x/s), x' = q·s).
  void set_quantize_activations(bool on) { quantize_acts_ = on; }

  // round_cache_bf16: round the cached latent and k_pe to BF16 as a BF16 KV cache stores them.
  ReferenceOutput forward(const std::vector<int32_t>& tokens, bool round_cache_bf16 = false);
  // MTP (reference §1.9, vLLM order): position i takes hidden[i] (main model, pre-norm) and next_tokens[i];
  // returns logits [S, vocab] predicting token i + 2. Embedding zeroed at position 0 (vLLM).
  std::vector<double> mtp(const std::vector<double>& hidden, const std::vector<int32_t>& next_tokens);

 private:
  const std::vector<double>& w(const std::string& name);  // dequantized, cached
  std::vector<double> linear(const std::vector<double>& x, int64_t S, const std::string& name, int64_t n, int64_t k);
  std::vector<double> rmsnorm(const std::vector<double>& x, int64_t S, int64_t dim, const std::string& weight);
  // One transformer block over the whole sequence, in place on x [S, hidden].
  void block(std::vector<double>& x, int64_t S, int64_t layer, bool round_cache_bf16);
  std::vector<double> attention(const std::vector<double>& x, int64_t S, const std::string& prefix,
                                bool round_cache_bf16);
  std::vector<double> mlp(const std::vector<double>& x, int64_t S, const std::string& prefix, int64_t inter);
  std::vector<double> moe(const std::vector<double>& x, int64_t S, const std::string& prefix);
  void rope(double* v, int64_t pos);

  ModelConfig cfg_;
  Checkpoint ckpt_;
  std::map<std::string, std::vector<double>> cache_;
  bool quantize_acts_ = false;
};

// max |a − b| / max |b|.
double max_rel_diff(const std::vector<float>& a, const std::vector<double>& b);

}  // namespace deepmoe::testing_util
