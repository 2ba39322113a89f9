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
// That is hidden_size floats per token (V3: 28 KiB, a fifth of its FP32 latent cache).
#pragma once

#include "runtime/engine.h"
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

  std::vector<float> draft(LmSequence& sequence, int32_t next) override;
  std::vector<float> draft_more(LmSequence& sequence, int32_t token) override;

  // The model's caches of a sequence made by new_sequence() (tests compare them bitwise); it must live on rank 0.
  static const Sequence& caches(const LmSequence& sequence);
  // MTP cache positions computed from the main model's hidden states (the rest are draft positions).
  static int64_t mtp_positions(const LmSequence& sequence);

 protected:
  std::vector<float> forward_rows_tokens(LmSequence& sequence, std::span<const int32_t> tokens, size_t rows) override;

 private:
  Engine& engine_;
  DeepseekLm plain_;
};

}  // namespace deepmoe
