// The DeepSeek forward pass (runtime/engine.h) as the generation loop's CausalLm: one sequence per
// request, logits of the last fed token.
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

 protected:
  std::vector<float> forward_tokens(LmSequence& sequence, std::span<const int32_t> tokens) override;

 private:
  Engine& engine_;
};

}  // namespace deepmoe
