// The DeepSeek model with its MTP module as a SpeculativeLm (reference §1.9; DeepSeek-V3 report §2.2): the module,
// fed the main model's last hidden state at position i and the embedding of token i + 1, proposes token i + 2.
// One draft token is DeepSeek's own setting; more reuse the one module recurrently on its own output hidden state
// and its own draft token, as vLLM and SGLang do for DeepSeek.
//
// This is the only place speculative decoding touches the model: the loop (speculative_generator.h) sees logits
// only, so moving onto another forward API means rewriting this adapter alone.
//
// Per sequence it keeps the main model's hidden state of every fed position: the MTP cache is rebuilt from them
// after a rejected draft or a truncated prefix (a later chat turn), since MTP position i depends on token i + 1.
// That is hidden_size floats per token (V3: 28 KiB, a fifth of its FP32 latent cache). With KV pools (the batch
// scheduler) a sequence may start from the KV prefix cache; the hidden states of those prefixes are kept beside it
// (hidden_prefix_cache.h) and a prefix counts as cached only as far as both hold it.
#pragma once

#include <memory>

#include "runtime/engine.h"
#include "runtime/hidden_prefix_cache.h"
#include "runtime/deepseek_lm.h"
#include "runtime/speculative_lm.h"

namespace deepmoe {

class MtpSpeculativeLm : public SpeculativeLm {
 public:
  // Throws deepmoe::Error when the model has no MTP module loaded.
  explicit MtpSpeculativeLm(Engine& engine);

  Engine& engine() { return engine_; }

  int64_t vocab_size() const override { return plain_.vocab_size(); }
  int64_t context_length() const override { return plain_.context_length(); }
  std::vector<int32_t> eos_token_ids() const override { return plain_.eos_token_ids(); }
  std::unique_ptr<LmSequence> new_sequence() override;
  std::unique_ptr<LmSequence> new_sequence(std::span<const int32_t> prompt, int64_t reserve_tokens) override;
  KvCapacity kv_capacity() const override;
  bool has_room(int64_t reserve_tokens) const override;

  // From now on new sequences draw their caches from `pools` (Engine::create_kv_pools: a KV byte budget, the
  // prefix cache), as DeepseekLm::use_kv_pools; the hidden states of cached prefixes are kept for as many tokens
  // as the main pool holds.
  void use_kv_pools(KvPools pools);
  const KvPools& kv_pools() const { return pools_; }
  const HiddenPrefixCache* hidden_prefix_cache() const { return hidden_cache_.get(); }

  void prefill_draft(LmSequence& sequence) override;
  std::vector<float> draft(LmSequence& sequence, int32_t next) override;
  std::vector<float> draft_more(LmSequence& sequence, int32_t token) override;
  std::vector<std::vector<float>> draft_batch(std::span<const LmDraftEntry> entries) override;

  // The model's caches of a sequence made by new_sequence() (tests compare them bitwise); it must live on rank 0.
  static const Sequence& caches(const LmSequence& sequence);
  // MTP cache positions computed from the main model's hidden states (the rest are draft positions).
  static int64_t mtp_positions(const LmSequence& sequence);

 protected:
  std::vector<float> forward_rows_tokens(LmSequence& sequence, std::span<const int32_t> tokens, size_t rows) override;
  std::vector<std::vector<float>> forward_rows_tokens_batch(std::span<const LmRowsEntry> entries) override;

 private:
  Engine& engine_;
  DeepseekLm plain_;
  KvPools pools_;
  std::unique_ptr<HiddenPrefixCache> hidden_cache_;
};

}  // namespace deepmoe
