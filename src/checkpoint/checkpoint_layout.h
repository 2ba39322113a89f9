// The tensors of a Hugging Face DeepSeek-V3 / V2 checkpoint, derived from its config alone: names, shapes and
// dtypes exactly as the official checkpoints store them (reference deepseek_v3_system.md §1.8, §1.9). The
// checkpoint generator writes this list, `inspect` counts parameters from it, and tests compare against it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace deepmoe {

struct ModelConfig;

enum class TensorRole : uint8_t {
  Embedding,       // model.embed_tokens.weight [vocab, hidden] (and the MTP layer's copy)
  Norm,            // RMSNorm weights
  Linear,          // a projection W[out, in] (FP8 in an FP8 checkpoint, with a ScaleInv following it)
  ScaleInv,        // weight_scale_inv f32 [ceil(out/128), ceil(in/128)] of the Linear just before it
  EhProj,          // MTP eh_proj [hidden, 2·hidden], BF16 even in FP8 checkpoints
  GateWeight,      // MoE router mlp.gate.weight [n_routed_experts, hidden], BF16
  CorrectionBias,  // mlp.gate.e_score_correction_bias [n_routed_experts], F32 (noaux_tc only)
  LmHead,          // lm_head.weight [vocab, hidden] (and the MTP shared_head.head copy)
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
  TensorRole role = TensorRole::Linear;
  int64_t layer = -1;   // transformer layer index (num_hidden_layers + k for MTP module k), -1 outside layers
  int64_t expert = -1;  // routed expert index, -1 for everything else (shared experts included)
  bool mtp = false;     // belongs to an MTP module
  // The MTP module's embed_tokens / shared_head.head: stored again in the checkpoint but shared with the main
  // model (README_WEIGHTS.md), so parameter counts skip them and the generator writes the same values.
  bool shared_copy = false;
  // For a shared copy: the main-model tensor it duplicates; otherwise the tensor's own name.
  std::string value_source;

  int64_t numel() const;
  uint64_t nbytes() const;
  int64_t fan_in() const { return shape.size() == 2 ? shape[1] : 1; }
};

// Every tensor of the checkpoint, in file order (per layer: attention, norms, MLP/MoE), MTP modules last.
// fp8 == true: projections are F8_E4M3, each followed by its `weight_scale_inv`; else all BF16.
std::vector<TensorSpec> checkpoint_layout(const ModelConfig& config, bool fp8);

// weight_scale_inv shape for an FP8 weight [n, k] with 128×128 blocks.
inline std::vector<int64_t> block_scale_shape(int64_t n, int64_t k) { return {(n + 127) / 128, (k + 127) / 128}; }

}  // namespace deepmoe
