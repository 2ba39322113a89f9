#include "runtime/deepseek_lm.h"

#include <algorithm>

#include "core/error.h"
#include "model/config.h"

namespace deepmoe {
namespace {

class DeepseekSequence : public LmSequence {
 public:
  explicit DeepseekSequence(std::unique_ptr<EngineSequence> s) : sequence(std::move(s)) {}
  std::unique_ptr<EngineSequence> sequence;

 protected:
  void truncate_cache(int64_t n) override {
    sequence->main.truncate(n);
    // The MTP cache runs one position behind the main one (model/kv_cache.h).
    sequence->mtp.truncate(std::min(n, sequence->mtp.length()));
  }
};

}  // namespace

DeepseekLm::DeepseekLm(Engine& engine) : engine_(engine) {}

int64_t DeepseekLm::vocab_size() const { return engine_.config().vocab_size; }

int64_t DeepseekLm::context_length() const { return engine_.config().max_position_embeddings; }

std::vector<int32_t> DeepseekLm::eos_token_ids() const {
  const ModelConfig& c = engine_.config();
  std::vector<int32_t> ids;
  for (int64_t id : c.eos_token_ids) ids.push_back(static_cast<int32_t>(id));
  if (c.eos_token_id >= 0) ids.push_back(static_cast<int32_t>(c.eos_token_id));
  return ids;
}

std::unique_ptr<LmSequence> DeepseekLm::new_sequence() {
  if (pools_.main) return std::make_unique<DeepseekSequence>(engine_.create_sequence(pools_));
  return std::make_unique<DeepseekSequence>(engine_.create_sequence());
}

std::unique_ptr<LmSequence> DeepseekLm::new_sequence(std::span<const int32_t> prompt, int64_t reserve_tokens) {
  if (!pools_.main) return new_sequence();
  std::unique_ptr<EngineSequence> placed = engine_.create_sequence(pools_, prompt, reserve_tokens);
  if (!placed) return nullptr;
  auto seq = std::make_unique<DeepseekSequence>(std::move(placed));
  // The prefix the pool's cache supplied is already in the KV cache: record it as fed.
  const int64_t cached = seq->sequence->cached_tokens();
  record_fed_tokens(*seq, prompt.subspan(0, size_t(cached)));
  return seq;
}

KvCapacity DeepseekLm::kv_capacity() const {
  if (!pools_.main) return {};
  const KvLayout& layout = pools_.main->layout();
  const int64_t per_rank = pools_.main->max_blocks() * layout.block_tokens;
  return {per_rank * engine_.sequence_ranks(), layout.block_tokens, per_rank};
}

bool DeepseekLm::has_room(int64_t reserve_tokens) const {
  return !pools_.main || engine_.has_room(pools_, reserve_tokens);
}

std::vector<std::vector<float>> DeepseekLm::forward_tokens_batch(std::span<const LmBatchEntry> entries) {
  std::vector<EngineInput> batch;
  for (const LmBatchEntry& e : entries) {
    auto& seq = static_cast<DeepseekSequence&>(*e.sequence);
    DEEPMOE_CHECK(seq.sequence->length() == e.sequence->length(), "cache and token list disagree");
    EngineInput in{seq.sequence.get(), std::vector<int32_t>(e.tokens.begin(), e.tokens.end()), {}};
    if (e.logits) in.logit_indices.push_back(int64_t(e.tokens.size()) - 1);
    batch.push_back(std::move(in));
  }
  const Tensor logits = engine_.forward(batch);  // [entries with logits, vocab_size] F32
  const int64_t vocab = vocab_size();
  std::vector<std::vector<float>> out;
  const float* data = logits.data<float>();
  for (int64_t r = 0; r < logits.dim(0); ++r) out.emplace_back(data + r * vocab, data + (r + 1) * vocab);
  return out;
}

std::vector<float> DeepseekLm::forward_tokens(LmSequence& sequence, std::span<const int32_t> tokens) {
  auto& seq = static_cast<DeepseekSequence&>(sequence);
  DEEPMOE_CHECK(seq.sequence->length() == sequence.length(), "cache and token list disagree");
  std::vector<EngineInput> batch{
      EngineInput::last(seq.sequence.get(), std::vector<int32_t>(tokens.begin(), tokens.end()))};
  const Tensor logits = engine_.forward(batch);  // [1, vocab_size] F32
  DEEPMOE_CHECK(logits.dtype() == DType::F32 && logits.numel() == vocab_size());
  const float* data = logits.data<float>();
  return std::vector<float>(data, data + logits.numel());
}

}  // namespace deepmoe
