// MTP speculative decoding (runtime/speculative_generator.h) on random tiny V3 checkpoints, against the plain
// generation loop on the same model: greedy output token for token over 50+ prompts, EOS / stop token / stop
// string / max_tokens inside accepted runs, and caches after rejected drafts bitwise equal to a run that never
// saw them.
//
// A random MTP module almost never guesses a random main model's next token, so most tests also run with a
// drafter that, at chosen positions, turns the module's logits into the plain run's next token (`Oracle`): the
// MTP module still runs at every draft (its cache and recurrence are exercised), and verification then sees
// long accepted runs, early rejections and recurrent drafts on top of wrong ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>

#include "runtime/engine.h"
#include "parallel/thread_communicator.h"
#include "runtime/deepseek_lm.h"
#include "runtime/generator.h"
#include "runtime/speculative_generator.h"
#include "runtime/speculative_mtp_lm.h"
#include "sampling/rng.h"
#include "tiny_checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {
namespace {

using namespace testing_util;

struct Fixture {
  std::unique_ptr<Engine> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

Fixture& fixture() {
  static Fixture f = [] {
    const std::string dir = temp_dir("speculative") + "/v3";
    write_tiny_checkpoint(tiny_v3_config(), dir, WeightFormat::Fp8, 21);
    ExecutorOptions o;
    o.threads = 2;
    Fixture out;
    out.model = Engine::open(dir, o);
    out.tokenizer = Tokenizer::load(DEEPMOE_TEST_ASSETS_DIR "/tokenizer");
    return out;
  }();
  return f;
}

// The MTP drafter with the plain run's continuation `truth` (prompt + generated tokens) forced as the draft at
// the positions `forced` picks; elsewhere the module's own logits stand.
class Oracle : public MtpSpeculativeLm {
 public:
  using MtpSpeculativeLm::MtpSpeculativeLm;
  std::vector<int32_t> truth;
  std::function<bool(int64_t position)> forced = [](int64_t) { return false; };
  int64_t drafts = 0;

  std::vector<float> draft(LmSequence& seq, int32_t next) override {
    position_ = seq.length() + 1;  // the draft predicts the token at this position
    return steer(MtpSpeculativeLm::draft(seq, next));
  }
  std::vector<float> draft_more(LmSequence& seq, int32_t token) override {
    ++position_;
    return steer(MtpSpeculativeLm::draft_more(seq, token));
  }

 private:
  std::vector<float> steer(std::vector<float> logits) {
    ++drafts;
    if (position_ < static_cast<int64_t>(truth.size()) && forced(position_)) logits[truth[position_]] = 1e4f;
    return logits;
  }
  int64_t position_ = 0;
};

GenerationRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0;
  return r;
}

std::vector<int32_t> ids(const RequestState& s) {
  std::vector<int32_t> out;
  for (const auto& t : s.tokens) out.push_back(t.token);
  return out;
}

std::vector<int32_t> random_prompt(Rng& rng, int64_t vocab) {
  const size_t n = 1 + rng.next_u64() % 12;
  std::vector<int32_t> p = {0};  // BOS
  while (p.size() < n) p.push_back(static_cast<int32_t>(2 + rng.next_u64() % uint64_t(vocab - 2)));
  return p;
}

bool same_rows(const KvCache& a, const KvCache& b, int64_t rows) {
  if (a.length() < rows || b.length() < rows || a.n_layers() != b.n_layers() || a.dtype() != b.dtype()) return false;
  const size_t row_bytes = static_cast<size_t>(a.row_elems()) * dtype_size_bytes(a.dtype());
  for (int64_t l = 0; l < a.n_layers(); ++l) {
    const CacheRowView va = a.layer_view(l), vb = b.layer_view(l);  // paged: row by row through the block tables
    for (int64_t t = 0; t < rows; ++t)
      if (std::memcmp(va.row_at(t), vb.row_at(t), row_bytes) != 0) return false;
  }
  return true;
}

struct Runs {
  std::unique_ptr<RequestState> plain, spec;
  std::unique_ptr<LmSequence> plain_seq, spec_seq;
};

// The plain loop over the MTP adapter used as an ordinary CausalLm (so its caches and hidden states come from
// a run that never saw a draft), then the speculative loop with `oracle`.
Runs run_both(Oracle& oracle, const GenerationRequest& request, int k, bool force_all = false) {
  Fixture& f = fixture();
  Runs r;
  MtpSpeculativeLm plain_lm(*f.model);
  Generator plain(plain_lm, *f.tokenizer);
  r.plain_seq = plain_lm.new_sequence();
  r.plain = plain.generate(request, *r.plain_seq, {});
  oracle.truth = request.prompt;
  for (int32_t t : ids(*r.plain)) oracle.truth.push_back(t);
  if (force_all) oracle.forced = [](int64_t) { return true; };
  SpeculativeGenerator spec(oracle, *f.tokenizer, k);
  r.spec_seq = oracle.new_sequence();
  r.spec = spec.generate(request, *r.spec_seq, {});
  return r;
}

void expect_same_outcome(const Runs& r, const std::string& what) {
  EXPECT_EQ(ids(*r.spec), ids(*r.plain)) << what;
  EXPECT_EQ(r.spec->text, r.plain->text) << what;
  EXPECT_EQ(r.spec->finish, r.plain->finish) << what;
  // Log-probabilities come from the verification forward's rows: bitwise the plain decode's logits.
  for (size_t i = 0; i < std::min(r.spec->tokens.size(), r.plain->tokens.size()); ++i) {
    const SampledToken &a = r.spec->tokens[i], &b = r.plain->tokens[i];
    EXPECT_EQ(a.logprob, b.logprob) << what << ", token " << i;
    ASSERT_EQ(a.top.size(), b.top.size()) << what;
    for (size_t t = 0; t < a.top.size(); ++t) {
      EXPECT_EQ(a.top[t].token, b.top[t].token) << what;
      EXPECT_EQ(a.top[t].logprob, b.top[t].logprob) << what;
    }
  }
  // The cache holds exactly what the plain loop fed, bit for bit.
  EXPECT_EQ(r.spec_seq->tokens(), r.plain_seq->tokens()) << what;
  const Sequence& a = MtpSpeculativeLm::caches(*r.spec_seq);
  const Sequence& b = MtpSpeculativeLm::caches(*r.plain_seq);
  EXPECT_EQ(a.main.length(), b.main.length()) << what;
  EXPECT_TRUE(same_rows(a.main, b.main, b.main.length())) << what << ": main KV differs";
}

TEST(SpeculativeDecoding, GreedyOutputEqualsPlainForManyPrompts) {
  Fixture& f = fixture();
  Rng rng(5);
  int64_t drafted = 0, accepted = 0, steps = 0;
  for (int i = 0; i < 60; ++i) {
    const std::vector<int32_t> prompt = random_prompt(rng, f.model->config().vocab_size);
    const int k = 1 + i % 3;
    Oracle oracle(*f.model);
    // Every other prompt gets the module's own drafts only; the rest a mix of forced-correct positions.
    const uint64_t salt = rng.next_u64();
    if (i % 2) oracle.forced = [salt](int64_t pos) { return ((uint64_t(pos) * 0x9e3779b97f4a7c15ULL ^ salt) >> 60) < 12; };
    GenerationRequest request = greedy(prompt, 10 + i % 7);
    if (i % 3 == 0) {
      request.sampling.logprobs = true;
      request.sampling.top_logprobs = 3;
    }
    Runs r = run_both(oracle, request, k);
    if (i % 3 == 0) {
      EXPECT_EQ(r.spec->tokens.back().top.size(), 3u);
    }
    expect_same_outcome(r, "prompt " + std::to_string(i) + ", K = " + std::to_string(k));
    drafted += r.spec->stats.draft_tokens;
    accepted += r.spec->stats.accepted_draft_tokens;
    steps += r.spec->stats.verify_steps;
    EXPECT_LE(r.spec->stats.verify_steps, r.plain->stats.generated_tokens - 1);
  }
  std::printf("[greedy] %lld drafts, %lld accepted, %lld verify steps\n", (long long)drafted, (long long)accepted,
              (long long)steps);
  // Both outcomes were exercised many times.
  EXPECT_GT(accepted, drafted / 5);
  EXPECT_LT(accepted, drafted - drafted / 5);
}

TEST(SpeculativeDecoding, CachesAfterRejectedDraftsEqualARunThatNeverSawThem) {
  Fixture& f = fixture();
  for (int k : {1, 3}) {
    Oracle oracle(*f.model);
    oracle.forced = [](int64_t pos) { return pos % 3 != 0; };  // a rejection at least every third position
    Runs r = run_both(oracle, greedy({0, 40, 41, 300, 7}, 14), k);
    expect_same_outcome(r, "K = " + std::to_string(k));
    ASSERT_LT(r.spec->stats.accepted_draft_tokens, r.spec->stats.draft_tokens);
    ASSERT_GT(r.spec->stats.accepted_draft_tokens, 0);
    // The MTP cache too: catch both sequences up to the same last token; the plain one builds its MTP cache in
    // one call from hidden states no draft ever touched.
    const int32_t last = r.plain->tokens.back().token;
    MtpSpeculativeLm plain_lm(*f.model);
    const std::vector<float> want = plain_lm.draft(*r.plain_seq, last);
    const std::vector<float> got = oracle.MtpSpeculativeLm::draft(*r.spec_seq, last);
    const Sequence& a = MtpSpeculativeLm::caches(*r.spec_seq);
    const Sequence& b = MtpSpeculativeLm::caches(*r.plain_seq);
    ASSERT_EQ(b.mtp.length(), r.plain_seq->length());
    ASSERT_EQ(a.mtp.length(), b.mtp.length());
    EXPECT_TRUE(same_rows(a.mtp, b.mtp, b.mtp.length())) << "MTP KV differs, K = " << k;
    EXPECT_EQ(got, want);
  }
}

TEST(SpeculativeDecoding, EndingsInsideAcceptedRunsMatchThePlainLoop) {
  Fixture& f = fixture();
  const std::vector<int32_t> prompt = {0, 12, 99, 250};
  Oracle probe(*f.model);
  Runs base = run_both(probe, greedy(prompt, 16), 4, /*force_all=*/true);
  const std::vector<int32_t> out = ids(*base.plain);
  ASSERT_EQ(out.size(), 16u);
  for (int k : {2, 4}) {
    // max_tokens that falls inside a run of K + 1 accepted tokens.
    for (int64_t max_tokens : {2, 5, 7}) {
      Oracle oracle(*f.model);
      Runs r = run_both(oracle, greedy(prompt, max_tokens), k, true);
      expect_same_outcome(r, "max_tokens " + std::to_string(max_tokens));
      EXPECT_EQ(r.spec->finish, FinishReason::MaxTokens);
    }
    // A stop token id (the model's EOS works the same way) at the 6th generated token.
    {
      GenerationRequest req = greedy(prompt, 16);
      req.stop_token_ids = {out[5]};
      Oracle oracle(*f.model);
      Runs r = run_both(oracle, req, k, true);
      expect_same_outcome(r, "stop token");
      EXPECT_EQ(r.spec->finish, FinishReason::Eos);
      EXPECT_GT(r.spec->stats.accepted_draft_tokens, 0);
    }
    // A stop string: the text of generated tokens 4..5.
    {
      const std::string tail = f.tokenizer->decode(std::vector<int32_t>(out.begin() + 3, out.begin() + 5));
      if (tail.empty()) continue;
      GenerationRequest req = greedy(prompt, 16);
      req.stop = {tail};
      Oracle oracle(*f.model);
      Runs r = run_both(oracle, req, k, true);
      expect_same_outcome(r, "stop string");
      EXPECT_EQ(r.spec->finish, FinishReason::StopString);
    }
  }
}

TEST(SpeculativeDecoding, PromptPrefixReuseAcrossRequests) {
  // A second request on the same sequence (the next chat turn) reuses the cached prefix; the MTP cache is
  // rebuilt from the kept hidden states where the old continuation diverges.
  Fixture& f = fixture();
  Oracle oracle(*f.model);
  oracle.forced = [](int64_t pos) { return pos % 2 == 0; };
  SpeculativeGenerator spec(oracle, *f.tokenizer, 2);
  auto seq = oracle.new_sequence();
  auto first = spec.generate(greedy({0, 5, 6, 7}, 8), *seq, {});
  std::vector<int32_t> second_prompt = seq->tokens();
  second_prompt.resize(second_prompt.size() - 2);
  second_prompt.push_back(123);
  second_prompt.push_back(321);
  auto second = spec.generate(greedy(second_prompt, 9), *seq, {});
  EXPECT_EQ(second->stats.cached_prompt_tokens, static_cast<int64_t>(second_prompt.size()) - 2);

  MtpSpeculativeLm plain_lm(*f.model);
  Generator plain(plain_lm, *f.tokenizer);
  auto fresh = plain_lm.new_sequence();
  auto want = plain.generate(greedy(second_prompt, 9), *fresh, {});
  EXPECT_EQ(ids(*second), ids(*want));
  const int32_t last = want->tokens.back().token;
  plain_lm.draft(*fresh, last);
  oracle.MtpSpeculativeLm::draft(*seq, last);
  EXPECT_TRUE(same_rows(MtpSpeculativeLm::caches(*seq).mtp, MtpSpeculativeLm::caches(*fresh).mtp, fresh->length()));
}

// Under expert parallelism every forward and MTP forward is a collective (the MoE layers dispatch across ranks),
// so the ranks must make the same calls: here both run the same request, which keeps them in step. (Different
// requests per rank accept different numbers of drafts; lining those up is the engine's job.)
TEST(SpeculativeDecoding, TwoThreadRanksGiveTheSingleProcessOutput) {
  Fixture& f = fixture();
  const GenerationRequest request = greedy({0, 8, 16, 32}, 12);
  Oracle single(*f.model);
  single.forced = [](int64_t pos) { return pos % 4 != 1; };
  Runs want = run_both(single, request, 2);
  ASSERT_GT(want.spec->stats.accepted_draft_tokens, 0);
  std::vector<std::vector<int32_t>> got(2);
  std::vector<GenerationStats> stats(2);
  const std::string dir = temp_dir("speculative_ranks") + "/v3";
  write_tiny_checkpoint(tiny_v3_config(), dir, WeightFormat::Fp8, 21);  // the fixture's checkpoint
  run_thread_ranks(2, [&](Communicator& comm) {
    ExecutorOptions o;
    o.threads = 1;
    auto engine = Engine::open(dir, o, comm);
    if (!engine->is_leader()) {
      engine->follow();  // hosts half of the experts and joins every step with no tokens of its own
      return;
    }
    Oracle oracle(*engine);
    oracle.truth = single.truth;
    oracle.forced = single.forced;
    SpeculativeGenerator spec(oracle, *f.tokenizer, 2);
    auto seq = oracle.new_sequence();
    auto state = spec.generate(request, *seq, {});
    got[0] = ids(*state);
    stats[0] = state->stats;
    engine->finish();
  });
  EXPECT_EQ(got[0], ids(*want.plain));
  EXPECT_EQ(stats[0].accepted_draft_tokens, want.spec->stats.accepted_draft_tokens);
}

TEST(SpeculativeDecoding, SamplingIsDeterministicGivenTheSeed) {
  Fixture& f = fixture();
  GenerationRequest req = greedy({0, 3, 4}, 12);
  req.sampling.temperature = 0.9;
  req.sampling.top_p = 0.9;
  req.sampling.repetition_penalty = 1.2;
  req.sampling.seed = 77;
  auto run = [&] {
    MtpSpeculativeLm lm(*f.model);
    SpeculativeGenerator spec(lm, *f.tokenizer, 2);
    auto seq = lm.new_sequence();
    auto s = spec.generate(req, *seq, {});
    EXPECT_EQ(seq->length(), 3 + s->stats.generated_tokens - 1);
    return ids(*s);
  };
  EXPECT_EQ(run(), run());
}

TEST(SpeculativeDecoding, ModelWithoutMtpIsAClearError) {
  const std::string dir = temp_dir("speculative_nomtp") + "/v3";
  write_tiny_checkpoint(tiny_v3_config(), dir, WeightFormat::Fp8, 3);
  ExecutorOptions o;
  o.load_mtp = false;
  auto model = Engine::open(dir, o);
  try {
    MtpSpeculativeLm lm(*model);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MTP"), std::string::npos) << e.what();
  }
  MtpSpeculativeLm lm(*fixture().model);
  EXPECT_THROW(SpeculativeGenerator(lm, *fixture().tokenizer, 0), Error);
}

}  // namespace
}  // namespace deepmoe
