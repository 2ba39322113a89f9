// The executor (DESIGN.md §1): runs one step of the DeepSeek-V3 / V2 forward pass — a varlen batch of sequences,
// prefill and decode in one call — on this process's share of a job. It owns the schedule that the model
// (model/transformer.h) leaves out: the communicator, the placement of the routed experts over the ranks with its
// load statistics, rebalance and expert migration, the split into two micro-batches and their overlap of compute
// with the all-to-all (runtime/moe_layer_run.h). It returns logits only for the positions asked for.
//
// Batch invariance: a sequence's logits are bitwise identical whatever else is in the batch, whatever the thread
// count and whatever the rank count (every kernel fixes each output element's reduction order; GEMMs are row
// independent; tokens always travel through dispatch/combine).
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
#include "model/forward_context.h"
#include "model/kv_cache.h"
#include "model/transformer.h"

namespace deepmoe {

struct ModelConfig;
class Communicator;
class ExpertPlacement;
class ExpertLoadStats;
class TraceRecorder;

struct ExecutorOptions : TransformerOptions {
  // Expert parallelism. Extra physical expert slots per MoE layer over all ranks: each rank hosts
  // (n_routed_experts + redundant_experts) / ranks slots; the initial placement gives the first experts a second
  // replica (ExpertPlacement::uniform), rebalance() re-chooses them from the load statistics.
  int redundant_experts = 0;
  int load_window = 64;  // forward calls per MoE layer kept in the load statistics (EPLB's moving window)
  // > 0: every this many forward() calls, the next call first runs rebalance() (a batch boundary; every rank
  // makes the same calls, so the collective lines up). 0 = only when rebalance() is called.
  int rebalance_every = 0;
  // Two-micro-batch overlap (reference §6): 0 = when running on more than one rank, 1 = never, 2 = always. A
  // forward call splits into two micro-batches when some rank's batch has at least two tokens; the result is
  // bitwise the same either way.
  int micro_batches = 0;
  // Data-parallel attention (runtime/engine.h): the engine spreads the sequences over the ranks; off = every
  // sequence on rank 0, the other ranks only run experts.
  bool data_parallel_attention = true;
  // The engine (runtime/engine.h) runs a forward call of more positions than this as consecutive steps of at most
  // this many, with the same rows bit for bit (runtime/forward_chunks.h); 0 = always one step. Activation memory
  // then stops growing with the prompt: over 8k tokens of the V2-Lite 4-layer shape one step peaked 3.4 GB above
  // the weights, steps of 2048 1.35 GB (with seconds of system time zeroing fresh huge pages), steps of 1024
  // 0.7 GB, no slower (docs/BENCHMARKS.md). 1024 still gives V3's 256 routed experts ~32 rows each per step.
  int64_t forward_chunk_tokens = 1024;
};

// One sequence's new tokens in a forward call. They take positions sequence->length() ... + tokens.size() - 1
// and are appended to its cache. `S` is the sequence type: the executor's Sequence (model/kv_cache.h), or the
// engine's handle of a sequence that may live on another rank (runtime/engine.h).
template <class S>
struct BasicSequenceInput {
  S* sequence = nullptr;
  std::vector<int32_t> tokens;
  // Indices into `tokens` whose logits (and hidden states) are returned, in this order.
  std::vector<int64_t> logit_indices;
  // When forward() is given `hidden`: return the hidden state of every token of this sequence rather than of
  // logit_indices only. Speculative decoding feeds the MTP module the main model's state at every position
  // (reference §1.9) but needs logits only where it verifies.
  bool hidden_of_all_tokens = false;

  static BasicSequenceInput last(S* s, std::vector<int32_t> tokens) {  // logits of the last token only
    BasicSequenceInput in{s, std::move(tokens), {}};
    if (!in.tokens.empty()) in.logit_indices.push_back(int64_t(in.tokens.size()) - 1);
    return in;
  }
  static BasicSequenceInput all(S* s, std::vector<int32_t> tokens) {  // logits of every token
    BasicSequenceInput in{s, std::move(tokens), {}};
    for (size_t i = 0; i < in.tokens.size(); ++i) in.logit_indices.push_back(int64_t(i));
    return in;
  }
};
using SequenceInput = BasicSequenceInput<Sequence>;

// One sequence's input to the MTP module (reference §1.9): hidden[i] is the main model's last-layer output
// (before the final norm) at position p_i = sequence->mtp.length() + i, and next_tokens[i] = t_{p_i + 1}. The
// result row predicts token p_i + 2.
template <class S>
struct BasicMtpInput {
  S* sequence = nullptr;
  Tensor hidden;                     // [n, hidden_size] F32
  std::vector<int32_t> next_tokens;  // [n]
  std::vector<int64_t> logit_indices;
};
using MtpInput = BasicMtpInput<Sequence>;

class Executor {
 public:
  // Reads dir/config.json and the safetensors weights. Bad input (missing tensor, wrong shape or dtype) is a
  // deepmoe::Error naming the tensor, the expected and the actual shape.
  static std::unique_ptr<Executor> load(const std::string& dir, const ExecutorOptions& options = {});
  // Same, with a communicator for expert parallelism (the model keeps a reference; single rank when omitted).
  static std::unique_ptr<Executor> load(const std::string& dir, const ExecutorOptions& options,
                                        Communicator& comm);
  virtual ~Executor();

  const ModelConfig& config() const;
  const ExecutorOptions& options() const;
  Transformer& transformer();
  const Transformer& transformer() const;
  Communicator& comm() const;
  bool has_mtp() const;

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

  // Runs the batch and appends its tokens to the sequences' caches. Returns logits [n_requested, vocab_size] F32,
  // rows in batch order then logit_indices order. When `hidden` is given it receives the matching rows of the
  // last layer's output before the final norm [n_requested, hidden_size] (the MTP module's input) — every token's
  // row, in token order, for the sequences that ask for hidden_of_all_tokens.
  //
  // Every rank of the job calls forward() together (a rank with no tokens passes an empty batch and still joins
  // every collective). The input is checked, and the caches given room, before the first collective:
  // `before_collectives` is called at that point, so a caller that must announce the step to other ranks (the
  // engine's leader) announces only steps that passed the checks.
  Tensor forward(const std::vector<SequenceInput>& batch, Tensor* hidden = nullptr,
                 const std::function<void()>& before_collectives = {});

  // The MTP module: next-next-token logits [n_requested, vocab_size]; appends to each sequence's MTP cache. When
  // `hidden` is given it receives the matching rows of the module's output before its head norm
  // [n_requested, hidden_size], which a recurrent draft feeds back in as the next position's hidden state.
  Tensor forward_mtp(const std::vector<MtpInput>& batch, Tensor* hidden = nullptr,
                     const std::function<void()>& before_collectives = {});

  // Bytes of tensor data in the checkpoint (mapped, not copied).
  uint64_t weight_bytes() const;

  // Expert parallelism. The placement of the routed experts over the ranks (one placement layer per
  // MoE layer, the MTP layer last), and the global tokens per logical expert that dispatch recorded over the last
  // options().load_window forward calls that ran the layer (identical on every rank).
  const ExpertPlacement& placement() const;
  const ExpertLoadStats& load_stats() const;
  // Collective, between forward calls (a batch boundary): runs EPLB on the load statistics (hierarchical policy
  // over the config's expert groups, one node) and applies the result with apply_placement(). Sequences and
  // their caches are untouched, so a request continues with bitwise the same logits.
  void rebalance();
  // Collective, between forward calls: switches to `placement` (same logical experts and ranks; the slot count
  // may change), moving expert weights between ranks (parallel/expert_migration.h). Every rank must pass the
  // same placement.
  void apply_placement(const ExpertPlacement& placement);
  // Bytes of routed-expert weights this rank holds outside the checkpoint's mmap: the slots that rebalances
  // brought from other ranks (0 until then, and for slots a rank keeps).
  uint64_t moved_expert_bytes() const;
  // Records compute and communication spans of the following forward calls (nullptr stops); the recorder must
  // outlive its use.
  void set_trace(TraceRecorder* trace);

  struct Impl;

 private:
  explicit Executor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace deepmoe
