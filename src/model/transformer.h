// The DeepSeek-V3 / V2 model as model.py writes it: the weights of a Hugging Face checkpoint folder (FP8 weights
// used in place from the mmap, BF16/F32 also accepted) and the math of each block — embedding, attention, dense
// MLP, the MoE gate and experts (model/moe.h), the MTP module's input, the heads. It holds no schedule: which rows
// run together, how micro-batches interleave and where experts live across ranks is the engine's
// (runtime/executor.h), which calls these pieces in model.py's order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "kernels/gemm.h"
#include "model/config.h"
#include "model/forward_context.h"
#include "model/kv_cache.h"
#include "model/mla.h"
#include "model/model_weights.h"
#include "model/safetensors.h"

namespace deepmoe {

class ThreadPool;

struct TransformerOptions {
  GemmMode gemm = GemmMode::W8A32;  // how FP8 weights meet activations (kernels/gemm.h)
  DType kv_dtype = DType::F32;      // KV cache storage: F32 or BF16
  AttentionMode attention = AttentionMode::Absorbed;
  int threads = 0;       // worker threads; 0 = one per hardware thread
  bool load_mtp = true;  // load model.layers.{num_hidden_layers}.* when the checkpoint has it
};

class Transformer {
 public:
  // Which logical experts this process binds into its expert slots of MoE layer `moe_layer` (MoE layers in order,
  // the MTP block last), in slot order.
  using LocalExperts = std::function<std::vector<int>(int moe_layer)>;

  // Reads dir/config.json and binds the safetensors weights. Bad input (missing tensor, wrong shape or dtype) is a
  // deepmoe::Error naming the tensor, the expected and the actual shape.
  static std::unique_ptr<Transformer> load(const std::string& dir, const TransformerOptions& options,
                                           const LocalExperts& local_experts);
  ~Transformer();

  const ModelConfig& config() const { return cfg_; }
  const TransformerOptions& options() const { return opt_; }
  const ForwardContext& context() const { return ctx_; }
  const Checkpoint& checkpoint() const { return ckpt_; }
  bool has_mtp() const { return has_mtp_; }
  // Bytes of tensor data in the checkpoint (mapped, not copied).
  uint64_t weight_bytes() const { return ckpt_.total_bytes(); }
  // MoE layers, the MTP block's included.
  int n_moe_layers() const { return n_moe_; }
  // The same, from the config alone (before loading).
  static int count_moe_layers(const ModelConfig& config, const TransformerOptions& options);

  // Main blocks 0 .. num_hidden_layers − 1, then the MTP block (when loaded) as block num_hidden_layers.
  int64_t n_blocks() const { return int64_t(layers_.size()) + (has_mtp_ ? 1 : 0); }
  LayerWeights& block(int64_t b) { return b < int64_t(layers_.size()) ? layers_[size_t(b)] : mtp_.block; }
  const LayerWeights& block(int64_t b) const {
    return b < int64_t(layers_.size()) ? layers_[size_t(b)] : mtp_.block;
  }
  // The block's index among the MoE layers, -1 for a dense block.
  int moe_layer_of(int64_t b) const { return moe_layer_[size_t(b)]; }

  // A token id outside the vocabulary is an Error naming it.
  void check_token(int64_t token) const;
  // x[i] = embed(tokens[i]) [n, hidden].
  void embed(std::span<const int32_t> tokens, float* x) const;
  // Block.forward's first half on rows x [T, hidden]: x += attn(attn_norm(x)), then h = ffn_norm(x), the FFN's
  // input. `slices` place the rows in their sequences' caches (the block's cache layer set by the caller);
  // scratch is [T, hidden].
  void attention(const LayerWeights& w, float* x, int64_t T, const int64_t* positions,
                 const std::vector<SequenceSlice>& slices, float* h, float* scratch) const;
  // Dense MLP of a non-MoE block: out = mlp(h).
  void dense_ffn(const LayerWeights& w, const float* h, int64_t T, float* out) const;
  // The MTP module's input (vLLM deepseek_mtp.py order): x = eh_proj(cat[enorm(emb(next_tokens[i])),
  // hnorm(hidden[i])]) [n, hidden]; the embedding at position 0 is zeroed as vLLM does.
  void mtp_input(const float* hidden, std::span<const int32_t> next_tokens, const int64_t* positions, int64_t n,
                 float* x) const;
  // logits [n, vocab] = head(norm(rows)): the main model's head, or the MTP module's when `mtp_head`.
  Tensor logits(const float* rows, int64_t n, bool mtp_head) const;

  // A fresh sequence with an empty cache in the configured KV dtype, in private pools that grow as needed.
  std::unique_ptr<Sequence> create_sequence() const;
  // Block pools for the KV caches of many sequences within `budget_bytes` (split between the main layers and the
  // MTP layer by their rows per token; default_kv_budget_bytes() in kv_block_pool.h gives a default), with the
  // prefix cache on the main pool. `block_tokens` rows per block.
  KvPools create_kv_pools(uint64_t budget_bytes, int64_t block_tokens = 64) const;
  // A fresh sequence whose caches draw from `pools`; when a prompt is given, its longest cached prefix of full
  // blocks is taken from the prefix cache (Sequence::cached_tokens(), at most prompt.size() − 1) and the caller
  // runs forward() on the rest of the prompt only.
  std::unique_ptr<Sequence> create_sequence(const KvPools& pools, std::span<const int32_t> prompt = {}) const;

 private:
  Transformer() = default;

  ModelConfig cfg_;
  TransformerOptions opt_;
  Checkpoint ckpt_;
  std::unique_ptr<ThreadPool> pool_;
  ForwardContext ctx_;
  Tensor embed_;                     // [vocab, hidden]
  std::vector<LayerWeights> layers_;  // num_hidden_layers
  std::vector<int> moe_layer_;        // per block (MTP block last): index among MoE layers, -1 if dense
  int n_moe_ = 0;
  std::vector<float> final_norm_;
  WeightMatrix lm_head_;
  bool has_mtp_ = false;
  MtpWeights mtp_;
};

}  // namespace deepmoe
