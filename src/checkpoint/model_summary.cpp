#include "checkpoint/model_summary.h"

#include <cctype>
#include <cmath>
#include <set>

#include "checkpoint/checkpoint_layout.h"
#include "model/config.h"

namespace deepmoe {

ParameterCounts count_parameters(const ModelConfig& config) {
  ParameterCounts p;
  const double active_expert_fraction =
      config.n_routed_experts > 0 ? double(config.num_experts_per_tok) / double(config.n_routed_experts) : 0.0;
  int64_t routed_main = 0, routed_mtp = 0;
  for (const TensorSpec& t : checkpoint_layout(config, /*fp8=*/false)) {
    const int64_t n = t.numel();
    // A lookup reads one row of the embedding table per token.
    const int64_t active = t.role == TensorRole::Embedding ? config.hidden_size : n;
    if (t.mtp) {
      if (t.expert >= 0) {
        routed_mtp += n;
        p.mtp_total += n;
        continue;
      }
      if (!t.shared_copy) p.mtp_total += n;
      p.mtp_active_per_token += active;  // the shared head runs (and one embedding row is read) for MTP too
      continue;
    }
    p.total += n;
    if (t.role == TensorRole::Embedding) p.embedding += n;
    if (t.role == TensorRole::LmHead) p.lm_head += n;
    if (t.expert >= 0) {
      routed_main += n;
      continue;
    }
    p.active_per_token += active;
  }
  p.routed_experts = routed_main;
  // Every routed expert has the same size, so top-k of E is exactly k/E of the routed parameters.
  p.active_per_token += int64_t(std::llround(double(routed_main) * active_expert_fraction));
  p.mtp_active_per_token += int64_t(std::llround(double(routed_mtp) * active_expert_fraction));
  return p;
}

KvCacheSize kv_cache_size(const ModelConfig& config) {
  KvCacheSize k;
  k.absorbed_values_per_layer = config.kv_lora_rank + config.qk_rope_head_dim;
  k.naive_values_per_layer = config.num_attention_heads * (config.qk_head_dim() + config.v_head_dim);
  k.layers = config.num_hidden_layers;
  return k;
}

double decode_weight_bytes_per_step(const ModelConfig& config, bool fp8, int64_t batch) {
  const double E = double(config.n_routed_experts), k = double(config.num_experts_per_tok);
  // Expected distinct experts hit by `batch` tokens drawing k of E each (uniform routing); k when batch == 1.
  const double distinct = E > 0 ? E * (1.0 - std::pow(1.0 - k / E, double(batch))) : 0.0;
  double bytes = 0, routed = 0;
  for (const TensorSpec& t : checkpoint_layout(config, fp8)) {
    if (t.mtp) continue;
    if (t.expert >= 0) {
      routed += double(t.nbytes());
    } else if (t.role == TensorRole::Embedding) {
      bytes += double(batch) * double(config.hidden_size) * double(dtype_size_bytes(t.dtype));
    } else {
      bytes += double(t.nbytes());
    }
  }
  return bytes + (E > 0 ? routed * distinct / E : 0.0);
}

double projection_flops_per_token(const ModelConfig& config, bool include_lm_head) {
  const double active_expert_fraction =
      config.n_routed_experts > 0 ? double(config.num_experts_per_tok) / double(config.n_routed_experts) : 0.0;
  double params = 0;
  for (const TensorSpec& t : checkpoint_layout(config, false)) {
    if (t.mtp) continue;
    const bool projection = t.role == TensorRole::Linear || t.role == TensorRole::GateWeight ||
                            (include_lm_head && t.role == TensorRole::LmHead);
    if (!projection) continue;
    params += double(t.numel()) * (t.expert >= 0 ? active_expert_fraction : 1.0);
  }
  return 2.0 * params;
}

std::string tensor_name_pattern(const std::string& name) {
  // Fold every all-digit dotted component ("layers.12.", "experts.7.") to '*'.
  std::string out;
  size_t i = 0;
  while (i < name.size()) {
    size_t j = name.find('.', i);
    if (j == std::string::npos) j = name.size();
    const std::string part = name.substr(i, j - i);
    bool digits = !part.empty();
    for (char ch : part) digits = digits && std::isdigit(static_cast<unsigned char>(ch));
    out += digits ? "*" : part;
    if (j < name.size()) out += '.';
    i = j + 1;
  }
  return out;
}

CheckpointSummary summarize_checkpoint(const ModelConfig& config, const std::vector<StoredTensor>& tensors) {
  CheckpointSummary s;
  std::set<std::string> stored;
  for (const StoredTensor& t : tensors) {
    const std::string dtype(dtype_name(t.dtype));
    s.bytes_by_dtype[dtype] += t.nbytes;
    s.tensors_by_dtype[dtype] += 1;
    s.total_bytes += t.nbytes;
    if (t.dtype == DType::F8_E4M3) s.fp8_patterns[tensor_name_pattern(t.name)] += 1;
    stored.insert(t.name);
  }
  std::set<std::string> expected;
  for (const TensorSpec& t : checkpoint_layout(config, config.fp8)) {
    expected.insert(t.name);
    if (!stored.count(t.name)) s.missing.push_back(t.name);
  }
  for (const std::string& name : stored)
    if (!expected.count(name)) s.unexpected.push_back(name);
  return s;
}

}  // namespace deepmoe
