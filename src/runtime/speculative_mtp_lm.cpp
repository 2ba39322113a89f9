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

 protected:
  void truncate_cache(int64_t n) override {
    sequence->main.truncate(n);
    hidden.resize(static_cast<size_t>(n * hidden_size));
    // MTP position i read token i + 1, so position n - 1 goes too: the token after it is no longer known.
    mtp_valid = std::min(mtp_valid, std::max<int64_t>(n - 1, 0));
    sequence->mtp.truncate(std::min(sequence->mtp.length(), mtp_valid));
    draft_hidden.clear();
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
  return std::make_unique<MtpSequence>(engine_.create_sequence(), engine_.config().hidden_size);
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
  MtpSequence& seq = as_mtp(sequence);
  DEEPMOE_CHECK(seq.sequence->length() == sequence.length(), "cache and token list disagree");
  EngineInput in;
  in.sequence = seq.sequence.get();
  in.tokens.assign(tokens.begin(), tokens.end());
  for (size_t i = tokens.size() - rows; i < tokens.size(); ++i) in.logit_indices.push_back(static_cast<int64_t>(i));
  in.hidden_of_all_tokens = true;
  Tensor hidden;
  const Tensor logits = engine_.forward({in}, &hidden);  // [rows, vocab], hidden [tokens, hidden_size]
  DEEPMOE_CHECK(hidden.numel() == static_cast<int64_t>(tokens.size()) * seq.hidden_size);
  const float* h = hidden.data<float>();
  seq.hidden.insert(seq.hidden.end(), h, h + hidden.numel());
  seq.draft_hidden.clear();
  const float* l = logits.data<float>();
  return std::vector<float>(l, l + logits.numel());
}

std::vector<float> MtpSpeculativeLm::draft(LmSequence& sequence, int32_t next) {
  MtpSequence& seq = as_mtp(sequence);
  const int64_t length = sequence.length(), H = seq.hidden_size;
  DEEPMOE_CHECK(length >= 1 && seq.mtp_valid < length, "draft() needs a fed position the MTP module has not seen");
  // Drop the previous step's draft positions, then catch up on every position fed since: position i gets the
  // main hidden state h_i and token i + 1 (the fed one, or `next` for the last position).
  seq.sequence->mtp.truncate(seq.mtp_valid);
  const int64_t n = length - seq.mtp_valid;
  EngineMtpInput in;
  in.sequence = seq.sequence.get();
  in.hidden = Tensor::zeros(DType::F32, {n, H});
  std::copy_n(seq.hidden.data() + seq.mtp_valid * H, n * H, in.hidden.data<float>());
  const auto& fed = sequence.tokens();
  for (int64_t i = seq.mtp_valid; i + 1 < length; ++i) in.next_tokens.push_back(fed[static_cast<size_t>(i + 1)]);
  in.next_tokens.push_back(next);
  in.logit_indices = {n - 1};
  Tensor out_hidden;
  const Tensor logits = engine_.forward_mtp({in}, &out_hidden);
  seq.mtp_valid = length;
  seq.draft_hidden.assign(out_hidden.data<float>(), out_hidden.data<float>() + H);
  const float* l = logits.data<float>();
  return std::vector<float>(l, l + logits.numel());
}

std::vector<float> MtpSpeculativeLm::draft_more(LmSequence& sequence, int32_t token) {
  MtpSequence& seq = as_mtp(sequence);
  const int64_t H = seq.hidden_size;
  DEEPMOE_CHECK(!seq.draft_hidden.empty(), "draft_more() without a draft() since the last forward");
  EngineMtpInput in;
  in.sequence = seq.sequence.get();
  in.hidden = Tensor::zeros(DType::F32, {1, H});
  std::copy_n(seq.draft_hidden.data(), H, in.hidden.data<float>());
  in.next_tokens = {token};
  in.logit_indices = {0};
  Tensor out_hidden;
  const Tensor logits = engine_.forward_mtp({in}, &out_hidden);
  seq.draft_hidden.assign(out_hidden.data<float>(), out_hidden.data<float>() + H);
  const float* l = logits.data<float>();
  return std::vector<float>(l, l + logits.numel());
}

}  // namespace deepmoe
