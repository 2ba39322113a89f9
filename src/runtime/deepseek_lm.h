// The DeepSeek forward pass (runtime/engine.h) as the generation loop's CausalLm: one sequence per
// request (on whichever rank the engine places it), logits of the last fed token.
#pragma once

#include "runtime/engine.h"
#include "runtime/causal_lm.h"

namespace deepmoe {

class DeepseekLm : public CausalLm {
 public:
  explicit DeepseekLm(Engine& engine);

  Engine& engine() { return engine_; }

  int64_t vocab_size() const override;
  int64_t context_length() const override;
  std::vector<int32_t> eos_token_ids() const override;
  std::unique_ptr<LmSequence> new_sequence() override;
  std::unique_ptr<LmSequence> new_sequence(std::span<const int32_t> prompt, int64_t reserve_tokens) override;
  KvCapacity kv_capacity() const override;
  bool has_room(int64_t reserve_tokens) const override;

  // From now on new sequences draw their caches from `pools` (a KV byte budget and the prefix cache,
  // Engine::create_kv_pools) instead of private caches that grow as needed.
  void use_kv_pools(KvPools pools) { pools_ = std::move(pools); }
  const KvPools& kv_pools() const { return pools_; }

 protected:
  std::vector<float> forward_tokens(LmSequence& sequence, std::span<const int32_t> tokens) override;
  std::vector<std::vector<float>> forward_tokens_batch(std::span<const LmBatchEntry> entries) override;

 private:
  Engine& engine_;
  KvPools pools_;
};

}  // namespace deepmoe
