#include "runtime/speculative_mtp_lm.h"

#include <algorithm>

#include "core/error.h"
#include "model/config.h"

namespace deepmoe {
namespace {

class MtpSequence : public LmSequence {
 public:
  MtpSequence(std::unique_ptr<EngineSequence> s, int64_t hidden_size)
      : sequence(std::move(s)), hidden_size(hidden_size) {}

  std::unique_ptr<EngineSequence> sequence;
  const int64_t hidden_size;
  std::vector<float> hidden;        // [length(), hidden_size]: the main model's last-layer state per position
  int64_t mtp_valid = 0;            // MTP positions [0, mtp_valid) came from main hidden states and fed tokens
  std::vector<float> draft_hidden;  // [hidden_size]: the MTP output at the last draft position
  int64_t published = 0;            // leading positions whose hidden states went to the hidden prefix cache

 protected:
  void truncate_cache(int64_t n) override {
    sequence->main.truncate(n);
    hidden.resize(static_cast<size_t>(n * hidden_size));
    // MTP position i read token i + 1, so position n - 1 goes too: the token after it is no longer known.
    mtp_valid = std::min(mtp_valid, std::max<int64_t>(n - 1, 0));
    sequence->mtp.truncate(std::min(sequence->mtp.length(), mtp_valid));
    draft_hidden.clear();
    published = std::min(published, n);
  }
};

const MtpSequence& as_mtp(const LmSequence& s) {
  const auto* m = dynamic_cast<const MtpSequence*>(&s);
  DEEPMOE_CHECK(m != nullptr, "sequence was not made by MtpSpeculativeLm::new_sequence");
  return *m;
}

MtpSequence& as_mtp(LmSequence& s) { return const_cast<MtpSequence&>(as_mtp(static_cast<const LmSequence&>(s))); }

}  // namespace

MtpSpeculativeLm::MtpSpeculativeLm(Engine& engine) : engine_(engine), plain_(engine) {
  if (!engine.has_mtp())
    throw Error("speculative decoding with MTP needs the checkpoint's MTP layer (num_nextn_predict_layers > 0, "
                "model.layers." + std::to_string(engine.config().num_hidden_layers) + ".*), and this model has none");
}

std::unique_ptr<LmSequence> MtpSpeculativeLm::new_sequence() {
  auto sequence = pools_.main ? engine_.create_sequence(pools_) : engine_.create_sequence();
  return std::make_unique<MtpSequence>(std::move(sequence), engine_.config().hidden_size);
}

std::unique_ptr<LmSequence> MtpSpeculativeLm::new_sequence(std::span<const int32_t> prompt, int64_t reserve_tokens) {
  if (!pools_.main) return new_sequence();
  std::unique_ptr<EngineSequence> placed = engine_.create_sequence(pools_, prompt, reserve_tokens);
  if (!placed) return nullptr;
  auto seq = std::make_unique<MtpSequence>(std::move(placed), engine_.config().hidden_size);
  // The KV prefix cache supplied whole blocks; keep as many of them as the hidden prefix cache can match.
  const int64_t cached = seq->sequence->cached_tokens();
  const int64_t blocks = hidden_cache_->lookup(prompt.subspan(0, size_t(cached)), seq->hidden);
  const int64_t kept = blocks * hidden_cache_->block_tokens();
  seq->sequence->main.truncate(kept);
  seq->published = kept;
  record_fed_tokens(*seq, prompt.subspan(0, size_t(kept)));
  return seq;
}

KvCapacity MtpSpeculativeLm::kv_capacity() const {
  if (!pools_.main) return {};
  const KvLayout& layout = pools_.main->layout();
  const int64_t per_rank = pools_.main->max_blocks() * layout.block_tokens;
  return {per_rank * engine_.sequence_ranks(), layout.block_tokens, per_rank};
}

bool MtpSpeculativeLm::has_room(int64_t reserve_tokens) const {
  return !pools_.main || engine_.has_room(pools_, reserve_tokens);
}

void MtpSpeculativeLm::use_kv_pools(KvPools pools) {
  pools_ = std::move(pools);
  hidden_cache_.reset();
  if (pools_.main) {
    const KvLayout& layout = pools_.main->layout();
    hidden_cache_ = std::make_unique<HiddenPrefixCache>(layout.block_tokens, engine_.config().hidden_size,
                                                        pools_.main->max_blocks() * layout.block_tokens);
  }
}

const Sequence& MtpSpeculativeLm::caches(const LmSequence& sequence) {
  const Sequence* local = as_mtp(sequence).sequence->local();
  DEEPMOE_CHECK(local != nullptr, "the sequence's caches live on another rank");
  return *local;
}

int64_t MtpSpeculativeLm::mtp_positions(const LmSequence& sequence) {
  return as_mtp(sequence).mtp_valid;
}

std::vector<float> MtpSpeculativeLm::forward_rows_tokens(LmSequence& sequence, std::span<const int32_t> tokens,
                                                         size_t rows) {
  const LmRowsEntry entry{&sequence, tokens, rows};
  return std::move(forward_rows_tokens_batch({&entry, 1}).front());
}

std::vector<std::vector<float>> MtpSpeculativeLm::forward_rows_tokens_batch(std::span<const LmRowsEntry> entries) {
  std::vector<EngineInput> batch;
  for (const LmRowsEntry& e : entries) {
    MtpSequence& seq = as_mtp(*e.sequence);
    DEEPMOE_CHECK(seq.sequence->length() == e.sequence->length(), "cache and token list disagree");
    EngineInput in;
    in.sequence = seq.sequence.get();
    in.tokens.assign(e.tokens.begin(), e.tokens.end());
    for (size_t i = e.tokens.size() - e.rows; i < e.tokens.size(); ++i) in.logit_indices.push_back(int64_t(i));
    in.hidden_of_all_tokens = true;  // the MTP module reads the main model's state at every position
    batch.push_back(std::move(in));
  }
  Tensor hidden;
  const Tensor logits = engine_.forward(batch, &hidden);  // [rows over entries, vocab], hidden [tokens, H]
  const int64_t vocab = vocab_size();
  const float* h = hidden.data<float>();
  const float* l = logits.data<float>();
  std::vector<std::vector<float>> out;
  for (const LmRowsEntry& e : entries) {
    MtpSequence& seq = as_mtp(*e.sequence);
    const size_t n = e.tokens.size() * size_t(seq.hidden_size);
    seq.hidden.insert(seq.hidden.end(), h, h + n);
    h += n;
    seq.draft_hidden.clear();
    out.emplace_back(l, l + e.rows * size_t(vocab));
    l += e.rows * size_t(vocab);
  }
  DEEPMOE_CHECK(h == hidden.data<float>() + hidden.numel() && l == logits.data<float>() + logits.numel());
  return out;
}

void MtpSpeculativeLm::prefill_draft(LmSequence& sequence) {
  MtpSequence& seq = as_mtp(sequence);
  const int64_t length = sequence.length(), H = seq.hidden_size;
  seq.sequence->mtp.truncate(seq.mtp_valid);
  const int64_t n = length - 1 - seq.mtp_valid;  // positions whose token i + 1 is fed
  if (n <= 0) return;
  EngineMtpInput in;
  in.sequence = seq.sequence.get();
  in.hidden = Tensor::zeros(DType::F32, {n, H});
  std::copy_n(seq.hidden.data() + seq.mtp_valid * H, n * H, in.hidden.data<float>());
  const auto& fed = sequence.tokens();
  for (int64_t i = seq.mtp_valid; i + 1 < length; ++i) in.next_tokens.push_back(fed[static_cast<size_t>(i + 1)]);
  in.logit_indices = {n - 1};  // one head row: the forward returns logits, none are needed here
  engine_.forward_mtp({in});
  seq.mtp_valid = length - 1;
  seq.draft_hidden.clear();
}

std::vector<float> MtpSpeculativeLm::draft(LmSequence& sequence, int32_t next) {
  const LmDraftEntry entry{&sequence, next, false};
  return std::move(draft_batch({&entry, 1}).front());
}

std::vector<float> MtpSpeculativeLm::draft_more(LmSequence& sequence, int32_t token) {
  const LmDraftEntry entry{&sequence, token, true};
  return std::move(draft_batch({&entry, 1}).front());
}

std::vector<std::vector<float>> MtpSpeculativeLm::draft_batch(std::span<const LmDraftEntry> entries) {
  std::vector<EngineMtpInput> batch;
  for (const LmDraftEntry& e : entries) {
    MtpSequence& seq = as_mtp(*e.sequence);
    const int64_t length = e.sequence->length(), H = seq.hidden_size;
    EngineMtpInput in;
    in.sequence = seq.sequence.get();
    if (e.more) {
      // One position: the module's own output state at the previous draft and the token drawn from it.
      DEEPMOE_CHECK(!seq.draft_hidden.empty(), "draft_more() without a draft() since the last forward");
      in.hidden = Tensor::zeros(DType::F32, {1, H});
      std::copy_n(seq.draft_hidden.data(), H, in.hidden.data<float>());
      in.next_tokens = {e.token};
      in.logit_indices = {0};
    } else {
      DEEPMOE_CHECK(length >= 1 && seq.mtp_valid < length, "draft() needs a fed position the MTP module has not seen");
      // Every fed position is final here (the previous step truncated its rejected drafts): their hidden states
      // can serve later sequences that take the same prefix from the KV prefix cache.
      if (hidden_cache_) {
        const int64_t bt = hidden_cache_->block_tokens();
        if (length / bt > seq.published / bt)
          hidden_cache_->publish(e.sequence->tokens(), seq.hidden, seq.published / bt);
        seq.published = length / bt * bt;
      }
      // Drop the previous step's draft positions, then catch up on every position fed since: position i gets the
      // main hidden state h_i and token i + 1 (the fed one, or `next` for the last position).
      seq.sequence->mtp.truncate(seq.mtp_valid);
      const int64_t n = length - seq.mtp_valid;
      in.hidden = Tensor::zeros(DType::F32, {n, H});
      std::copy_n(seq.hidden.data() + seq.mtp_valid * H, n * H, in.hidden.data<float>());
      const auto& fed = e.sequence->tokens();
      for (int64_t i = seq.mtp_valid; i + 1 < length; ++i) in.next_tokens.push_back(fed[static_cast<size_t>(i + 1)]);
      in.next_tokens.push_back(e.token);
      in.logit_indices = {n - 1};
    }
    batch.push_back(std::move(in));
  }
  Tensor out_hidden;
  const Tensor logits = engine_.forward_mtp(batch, &out_hidden);  // one row per entry
  const int64_t vocab = vocab_size();
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < entries.size(); ++i) {
    MtpSequence& seq = as_mtp(*entries[i].sequence);
    const int64_t H = seq.hidden_size;
    if (!entries[i].more) seq.mtp_valid = entries[i].sequence->length();
    const float* h = out_hidden.data<float>() + int64_t(i) * H;
    seq.draft_hidden.assign(h, h + H);
    const float* l = logits.data<float>() + int64_t(i) * vocab;
    out.emplace_back(l, l + vocab);
  }
  return out;
}

}  // namespace deepmoe
