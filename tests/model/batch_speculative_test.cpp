// Speculative decoding inside continuous batching (runtime/batch_scheduler.h with draft_tokens > 0), against
// independent runs: greedy requests must give the plain one-at-a-time loop's tokens, text, finish reason and
// log-probabilities, with at most 8 requests running at once, prompts chunked, some sharing a cached prefix, some
// ending on stop strings or cancelled mid-way; seeded sampled requests must give exactly the one-request
// speculative loop's tokens for the same seed (the request's random stream is consumed in the same order); every
// KV block, main and MTP, must be back in the pool at the end. On a random tiny V3 checkpoint (one process and 2
// thread ranks) and on the trained default model.
//
// A random MTP module almost never guesses a random model's next token, so on the tiny checkpoint the drafter
// (`Steered`) turns the module's logits, at two positions of three, into the plain run's next token when the
// sequence so far is a prefix of a greedy request's plain run: long accepted runs, rejections after them and
// recurrent drafts on top of wrong ones all occur. The module still runs for every draft, batched.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/thread_communicator.h"
#include "runtime/batch_scheduler.h"
#include "runtime/deepseek_lm.h"
#include "runtime/engine.h"
#include "runtime/generator.h"
#include "runtime/speculative_generator.h"
#include "runtime/speculative_mtp_lm.h"
#include "sampling/rng.h"
#include "tiny_checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {
namespace {

using namespace testing_util;

const std::string& tiny_dir() {
  static const std::string dir = [] {
    const std::string d = temp_dir("batch_speculative") + "/v3";
    write_tiny_checkpoint(tiny_v3_config(), d, WeightFormat::Fp8, 41);
    return d;
  }();
  return dir;
}

const Tokenizer& tiny_tokenizer() {
  static const auto t = Tokenizer::load(DEEPMOE_TEST_ASSETS_DIR "/tokenizer");
  return *t;
}

ExecutorOptions options() {
  ExecutorOptions o;
  o.threads = 1;
  return o;
}

// The MTP drafter, steered towards known continuations (`truths`: prompt + the plain loop's output).
class Steered : public MtpSpeculativeLm {
 public:
  using MtpSpeculativeLm::MtpSpeculativeLm;
  std::vector<std::vector<int32_t>> truths;
  int64_t drafts = 0;

  std::vector<std::vector<float>> draft_batch(std::span<const LmDraftEntry> entries) override {
    std::vector<std::vector<float>> logits = MtpSpeculativeLm::draft_batch(entries);
    for (size_t i = 0; i < entries.size(); ++i) {
      std::vector<int32_t>& so_far = context_[entries[i].sequence];
      if (!entries[i].more) so_far = entries[i].sequence->tokens();
      so_far.push_back(entries[i].token);
      ++drafts;
      const size_t at = so_far.size();  // the position this draft predicts
      if (at % 3 == 0) continue;
      for (const auto& t : truths)
        if (t.size() > at && std::equal(so_far.begin(), so_far.end(), t.begin())) {
          logits[i][size_t(t[at])] = 1e4f;
          break;
        }
    }
    return logits;
  }

 private:
  std::map<const LmSequence*, std::vector<int32_t>> context_;
};

struct Outcome {
  std::vector<SampledToken> tokens;
  std::string text;
  FinishReason finish = FinishReason::None;
  int64_t cached = 0;
  bool cancelled = false;
  bool finished = false;
};

// Prompts of 1–120 tokens, a third starting with the same 96-token prefix; greedy, with logprobs on some.
std::vector<GenerationRequest> workload(int n, int64_t vocab, bool sampled) {
  Rng rng(11);
  std::vector<int32_t> shared(96);
  for (auto& t : shared) t = int32_t(3 + rng.next_u64() % uint64_t(vocab - 3));
  std::vector<GenerationRequest> out;
  for (int i = 0; i < n; ++i) {
    GenerationRequest r;
    if (i % 3 == 1) r.prompt = shared;
    const int extra = 1 + int(rng.next_u64() % (i % 3 == 1 ? 20 : 120));
    for (int k = 0; k < extra; ++k) r.prompt.push_back(int32_t(3 + rng.next_u64() % uint64_t(vocab - 3)));
    r.max_tokens = 2 + int64_t(rng.next_u64() % 24);
    r.sampling.temperature = sampled ? 0.9 : 0.0;
    r.sampling.top_k = sampled && i % 2 ? 40 : 0;
    r.sampling.seed = 500 + uint64_t(i);
    r.sampling.logprobs = i % 4 == 2;
    r.sampling.top_logprobs = r.sampling.logprobs ? 3 : 0;
    r.ignore_eos = i % 5 == 0;
    out.push_back(std::move(r));
  }
  return out;
}

// Each request alone: the plain loop, or the one-request speculative loop with `k` drafts.
std::vector<Outcome> run_alone(Engine& engine, const Tokenizer& tokenizer, const std::vector<GenerationRequest>& requests,
                               int k) {
  std::vector<Outcome> out;
  if (k == 0) {
    DeepseekLm lm(engine);
    Generator generator(lm, tokenizer);
    for (const auto& r : requests) {
      auto seq = lm.new_sequence();
      auto state = generator.generate(r, *seq, {});
      out.push_back({state->tokens, state->text, state->finish, 0, false, true});
    }
  } else {
    MtpSpeculativeLm lm(engine);
    SpeculativeGenerator generator(lm, tokenizer, k);
    for (const auto& r : requests) {
      auto seq = lm.new_sequence();
      auto state = generator.generate(r, *seq, {});
      out.push_back({state->tokens, state->text, state->finish, 0, false, true});
    }
  }
  return out;
}

struct BatchedRun {
  std::vector<Outcome> outcomes;
  SpeculationCounters counters;
  // Main-layer KV blocks per rank (data-parallel attention places requests on every rank): the most seen during
  // the run, and at its end; MTP-layer blocks left on the leader.
  std::vector<int64_t> main_peak, main_left;
  int64_t mtp_blocks_left = -1;
};

// Every request through one speculative scheduler of at most 8 running requests: arrivals spread over the
// steps, the cancellations `cancel` (request index → step), a KV cache of `kv_tokens` (over all ranks).
BatchedRun run_batched(Engine& engine, const Tokenizer& tokenizer, MtpSpeculativeLm& lm,
                       const std::vector<GenerationRequest>& requests, const std::map<size_t, int>& cancel, int k,
                       int64_t kv_tokens) {
  const ModelConfig& c = engine.config();
  const uint64_t row = uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * 4;
  lm.use_kv_pools(engine.create_kv_pools(uint64_t(kv_tokens) * row * uint64_t(c.num_hidden_layers + 1), 16));
  Generator generator(lm, tokenizer);
  SchedulerOptions so;
  so.max_batch_tokens = 40;  // longer prompts go in several chunks
  so.max_running = 8;
  so.draft_tokens = k;
  BatchScheduler scheduler(generator, so);
  BatchedRun run;
  run.outcomes.resize(requests.size());
  auto& out = run.outcomes;
  std::vector<uint64_t> id(requests.size(), 0);
  std::vector<bool> cancel_sent(requests.size(), false);
  size_t next = 0;
  int step = 0;
  while (next < requests.size() || !scheduler.idle()) {
    for (size_t a = 0; a < size_t(step % 4) && next < requests.size(); ++a, ++next) {
      const size_t i = next;
      id[i] = scheduler.add(
          requests[i], [&out, i](const RequestState& s, size_t, std::string_view) { out[i].tokens = s.tokens; },
          [&out, i](const RequestState* s, bool cancelled, const std::string& error) {
            EXPECT_EQ(error, "") << "request " << i;
            out[i].finished = true;
            out[i].cancelled = cancelled;
            if (s) {
              out[i].tokens = s->tokens;
              out[i].text = s->text;
              out[i].finish = s->finish;
              out[i].cached = s->stats.cached_prompt_tokens;
            }
          });
    }
    for (const auto& [i, at] : cancel)
      if (at <= step && id[i] && !cancel_sent[i]) scheduler.cancel(id[i]), cancel_sent[i] = true;
    scheduler.step();
    ++step;
    if (step % 4 == 0) {
      const std::vector<KvUsage> usage = engine.kv_usage();
      run.main_peak.resize(usage.size(), 0);
      for (size_t r = 0; r < usage.size(); ++r) run.main_peak[r] = std::max(run.main_peak[r], usage[r].used_blocks);
    }
    EXPECT_LT(step, 5000) << "the scheduler does not make progress";
    if (step >= 5000) break;
  }
  run.counters = scheduler.speculation();
  for (const KvUsage& u : engine.kv_usage()) run.main_left.push_back(u.used_blocks);
  run.mtp_blocks_left = lm.kv_pools().mtp->used_blocks();
  return run;
}

std::vector<int32_t> token_ids(const std::vector<SampledToken>& tokens) {
  std::vector<int32_t> out;
  for (const auto& t : tokens) out.push_back(t.token);
  return out;
}

void expect_same(const std::vector<Outcome>& alone, const BatchedRun& run, const std::map<size_t, int>& cancel,
                 const std::string& label, bool compare_logprobs) {
  for (size_t i = 0; i < alone.size(); ++i) {
    const Outcome& b = run.outcomes[i];
    ASSERT_TRUE(b.finished) << label << " request " << i;
    const std::vector<int32_t> want = token_ids(alone[i].tokens), got = token_ids(b.tokens);
    if (cancel.count(i)) {
      ASSERT_TRUE(b.cancelled) << label << " request " << i;
      ASSERT_LE(got.size(), want.size()) << label << " request " << i;
      EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << label << " request " << i;
      continue;
    }
    EXPECT_FALSE(b.cancelled) << label << " request " << i;
    EXPECT_EQ(got, want) << label << " request " << i;
    EXPECT_EQ(b.text, alone[i].text) << label << " request " << i;
    EXPECT_EQ(b.finish, alone[i].finish) << label << " request " << i;
    if (!compare_logprobs || got != want) continue;
    for (size_t t = 0; t < got.size(); ++t) {
      const SampledToken &x = b.tokens[t], &y = alone[i].tokens[t];
      EXPECT_EQ(x.logprob, y.logprob) << label << " request " << i << " token " << t;
      ASSERT_EQ(x.top.size(), y.top.size()) << label << " request " << i;
      for (size_t j = 0; j < x.top.size(); ++j) {
        EXPECT_EQ(x.top[j].token, y.top[j].token) << label << " request " << i;
        EXPECT_EQ(x.top[j].logprob, y.top[j].logprob) << label << " request " << i;
      }
    }
  }
  EXPECT_EQ(run.main_left, std::vector<int64_t>(run.main_peak.size(), 0))
      << label << ": main KV blocks still held after every request ended";
  for (size_t r = 0; r < run.main_peak.size(); ++r) EXPECT_GT(run.main_peak[r], 0) << label << ": rank " << r << " held no request";
  EXPECT_EQ(run.mtp_blocks_left, 0) << label << ": MTP KV blocks still held after every request ended";
}

// Stop strings cut from what some requests generate alone, so they do fire inside accepted runs.
void add_stop_strings(std::vector<GenerationRequest>& requests, const std::vector<Outcome>& plain) {
  for (size_t i = 0; i < requests.size(); ++i) {
    const std::string& text = plain[i].text;
    if (i % 4 == 3 && text.size() >= 6) requests[i].stop = {text.substr(text.size() / 2, 2)};
  }
}

std::vector<std::vector<int32_t>> truths_of(const std::vector<GenerationRequest>& requests,
                                            const std::vector<Outcome>& plain) {
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < requests.size(); ++i) {
    out.push_back(requests[i].prompt);
    for (const auto& t : plain[i].tokens) out.back().push_back(t.token);
  }
  return out;
}

const std::map<size_t, int> kCancel = {{5, 0}, {13, 6}, {22, 15}, {37, 25}, {48, 33}};

struct TinyGreedy {
  std::vector<GenerationRequest> requests;
  std::vector<Outcome> plain;
};

TinyGreedy tiny_greedy(Engine& engine) {
  TinyGreedy g;
  g.requests = workload(56, engine.config().vocab_size, false);
  add_stop_strings(g.requests, run_alone(engine, tiny_tokenizer(), g.requests, 0));
  g.plain = run_alone(engine, tiny_tokenizer(), g.requests, 0);
  return g;
}

void expect_drafts_were_tested(const BatchedRun& run, const std::vector<Outcome>& plain, const std::string& label) {
  int hits = 0, stopped = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    hits += run.outcomes[i].cached > 0;
    stopped += !kCancel.count(i) && plain[i].finish == FinishReason::StopString;
  }
  EXPECT_GE(hits, 8) << label << ": requests sharing the 96-token prefix should find it cached";
  EXPECT_GE(stopped, 4) << label << ": stop strings should end some requests";
  EXPECT_GT(run.counters.accepted_draft_tokens, run.counters.verify_steps / 2) << label << ": few accepted drafts";
  EXPECT_LT(run.counters.accepted_draft_tokens, run.counters.draft_tokens) << label << ": no rejected drafts";
}

TEST(BatchSpeculative, GreedyEqualsThePlainLoopOneProcess) {
  auto engine = Engine::open(tiny_dir(), options());
  const TinyGreedy g = tiny_greedy(*engine);
  for (int k : {1, 3}) {
    Steered lm(*engine);
    lm.truths = truths_of(g.requests, g.plain);
    // Room for about four requests at once: the rest wait for blocks.
    const BatchedRun run = run_batched(*engine, tiny_tokenizer(), lm, g.requests, kCancel, k, 640);
    const std::string label = "K = " + std::to_string(k);
    expect_same(g.plain, run, kCancel, label, true);
    expect_drafts_were_tested(run, g.plain, label);
  }
}

TEST(BatchSpeculative, GreedyEqualsThePlainLoopOnTwoThreadRanks) {
  TinyGreedy g;
  {
    auto engine = Engine::open(tiny_dir(), options());
    g = tiny_greedy(*engine);
  }
  BatchedRun run;
  run_thread_ranks(2, [&](Communicator& comm) {
    auto engine = Engine::open(tiny_dir(), options(), comm);
    if (!engine->is_leader()) {
      engine->follow();  // hosts half of the experts, joins every step (drafts included) with no tokens of its own
      return;
    }
    Steered lm(*engine);
    lm.truths = truths_of(g.requests, g.plain);
    // The budget is the job's, split between the ranks: about four requests on each.
    run = run_batched(*engine, tiny_tokenizer(), lm, g.requests, kCancel, 2, 1280);
    engine->finish();
  });
  expect_same(g.plain, run, kCancel, "2 ranks", true);
  expect_drafts_were_tested(run, g.plain, "2 ranks");
}

TEST(BatchSpeculative, SeededSamplingEqualsTheOneRequestSpeculativeLoop) {
  auto engine = Engine::open(tiny_dir(), options());
  const int k = 2;
  const auto requests = workload(40, engine->config().vocab_size, true);
  const std::vector<Outcome> alone = run_alone(*engine, tiny_tokenizer(), requests, k);
  MtpSpeculativeLm lm(*engine);
  const BatchedRun run = run_batched(*engine, tiny_tokenizer(), lm, requests, {}, k, 640);
  expect_same(alone, run, {}, "sampled", true);
  EXPECT_GT(run.counters.draft_tokens, 100);
}

// The trained default model (unpacked by a ctest fixture): its MTP module drafts well, so accepted runs come
// from the model itself.
TEST(BatchSpeculative, GreedyEqualsThePlainLoopOnTheTrainedDefaultModel) {
  const char* dir = std::getenv("DEEPMOE_DEFAULT_MODEL");
  ASSERT_NE(dir, nullptr) << "DEEPMOE_DEFAULT_MODEL must name the unpacked default model (ctest sets it)";
  auto engine = Engine::open(dir, options());
  const auto tokenizer = Tokenizer::load(dir);
  const std::vector<std::string> starts = {"Once upon a time", "The little dog", "One day, a girl named Lily",
                                           "Tom and his mom went to", "The sun was", "In the park there was",
                                           "She looked at the", "He wanted to"};
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 56; ++i) {
    GenerationRequest r;
    r.prompt = tokenizer->encode(starts[size_t(i) % starts.size()] + (i >= 8 ? " " + std::to_string(i) : ""));
    r.max_tokens = 8 + i % 24;
    r.sampling.temperature = 0.0;
    r.sampling.logprobs = i % 3 == 0;
    r.sampling.top_logprobs = r.sampling.logprobs ? 2 : 0;
    requests.push_back(std::move(r));
  }
  const std::vector<Outcome> plain = run_alone(*engine, *tokenizer, requests, 0);
  add_stop_strings(requests, plain);
  const std::vector<Outcome> plain_stopped = run_alone(*engine, *tokenizer, requests, 0);
  MtpSpeculativeLm lm(*engine);
  const std::map<size_t, int> cancel = {{7, 4}, {30, 20}};
  const BatchedRun run = run_batched(*engine, *tokenizer, lm, requests, cancel, 3, 2048);
  expect_same(plain_stopped, run, cancel, "default model", true);
  EXPECT_GT(run.counters.accepted_draft_tokens, run.counters.verify_steps / 2)
      << "the trained MTP module should get drafts accepted";
}

bool same_rows(const KvCache& a, const KvCache& b, int64_t rows) {
  if (a.length() < rows || b.length() < rows || a.n_layers() != b.n_layers() || a.dtype() != b.dtype()) return false;
  const size_t row_bytes = static_cast<size_t>(a.row_elems()) * dtype_size_bytes(a.dtype());
  for (int64_t l = 0; l < a.n_layers(); ++l) {
    const CacheRowView va = a.layer_view(l), vb = b.layer_view(l);
    for (int64_t t = 0; t < rows; ++t)
      if (std::memcmp(va.row_at(t), vb.row_at(t), row_bytes) != 0) return false;
  }
  return true;
}

// A sequence that takes its prompt prefix from the KV prefix cache gets the main model's hidden states of that
// prefix too, so its MTP cache and drafts are bitwise those of a sequence that computed the whole prompt; a prefix
// whose hidden states are not kept is not taken.
TEST(BatchSpeculative, APrefixFromTheCacheDraftsAsIfComputed) {
  auto engine = Engine::open(tiny_dir(), options());
  MtpSpeculativeLm lm(*engine);
  lm.use_kv_pools(engine->create_kv_pools(64 << 20, 16));
  Rng rng(3);
  std::vector<int32_t> prompt(70);
  for (auto& t : prompt) t = int32_t(3 + rng.next_u64() % 500);
  auto a = lm.new_sequence(prompt, 0);
  ASSERT_EQ(a->length(), 0);
  lm.forward_rows(*a, prompt, 1);
  const std::vector<float> draft_a = lm.draft(*a, 9);  // publishes the 4 full blocks' hidden states
  EXPECT_EQ(lm.hidden_prefix_cache()->stored_blocks(), 4);
  auto b = lm.new_sequence(prompt, 0);
  ASSERT_EQ(b->length(), 64);
  lm.forward_rows(*b, std::span<const int32_t>(prompt).subspan(64), 1);
  EXPECT_EQ(lm.draft(*b, 9), draft_a);
  EXPECT_EQ(MtpSpeculativeLm::mtp_positions(*b), 70);
  EXPECT_TRUE(same_rows(MtpSpeculativeLm::caches(*a).mtp, MtpSpeculativeLm::caches(*b).mtp, 70));
  EXPECT_TRUE(same_rows(MtpSpeculativeLm::caches(*a).main, MtpSpeculativeLm::caches(*b).main, 70));

  // Same KV pools, a fresh hidden prefix cache: the main pool still holds the prefix, but it is not taken.
  MtpSpeculativeLm other(*engine);
  other.use_kv_pools(lm.kv_pools());
  auto c = other.new_sequence(prompt, 0);
  EXPECT_EQ(MtpSpeculativeLm::caches(*c).main.held_blocks(), 0);
  EXPECT_EQ(c->length(), 0);
}

TEST(BatchSpeculative, NeedsAModelWithADraftModel) {
  auto engine = Engine::open(tiny_dir(), options());
  DeepseekLm lm(*engine);
  Generator generator(lm, tiny_tokenizer());
  SchedulerOptions so;
  so.draft_tokens = 2;
  EXPECT_THROW(BatchScheduler(generator, so), Error);
}

}  // namespace
}  // namespace deepmoe
