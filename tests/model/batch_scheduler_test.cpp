// Continuous batching (runtime/batch_scheduler.h) on a random tiny V3 checkpoint: 72 requests of mixed prompt
// and output lengths arrive over many steps into a KV cache that holds only a few of them at once, some share a
// long prompt prefix (prefix-cache hits), some end on stop strings, some are cancelled while queued or running,
// and prompts are prefilled in chunks. Every request's tokens, text and finish reason must equal those of the
// same request run alone by the one-at-a-time loop, in one process and with the experts on 2 and 4 thread ranks; every
// KV block must be back in the pool at the end.
#include <gtest/gtest.h>

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
#include "sampling/rng.h"
#include "tiny_checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {
namespace {

using namespace testing_util;

const std::string& model_dir() {
  static const std::string dir = [] {
    const std::string d = temp_dir("batch_scheduler") + "/v3";
    write_tiny_checkpoint(tiny_v3_config(), d, WeightFormat::Fp8, 31);
    return d;
  }();
  return dir;
}

const Tokenizer& tokenizer() {
  static const auto t = Tokenizer::load(DEEPMOE_TEST_ASSETS_DIR "/tokenizer");
  return *t;
}

ExecutorOptions options() {
  ExecutorOptions o;
  o.threads = 1;
  return o;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason finish = FinishReason::None;
  int64_t cached = 0;
  bool cancelled = false;
  bool finished = false;
};

std::vector<int32_t> ids(const RequestState& s) {
  std::vector<int32_t> out;
  for (const auto& t : s.tokens) out.push_back(t.token);
  return out;
}

// The workload: prompts of 1–160 tokens, a third of them starting with the same 150-token prefix.
std::vector<GenerationRequest> workload(int n) {
  Rng rng(7);
  std::vector<int32_t> shared(150);
  for (auto& t : shared) t = int32_t(3 + rng.next_u64() % 500);
  std::vector<GenerationRequest> out;
  for (int i = 0; i < n; ++i) {
    GenerationRequest r;
    if (i % 3 == 1) r.prompt = shared;
    const int extra = 1 + int(rng.next_u64() % (i % 3 == 1 ? 20 : 160));
    for (int k = 0; k < extra; ++k) r.prompt.push_back(int32_t(3 + rng.next_u64() % 500));
    r.max_tokens = 1 + int64_t(rng.next_u64() % 14);
    r.sampling.temperature = i % 2 == 0 ? 0.0 : 0.9;
    r.sampling.top_k = i % 4 == 1 ? 40 : 0;
    r.sampling.seed = 1000 + uint64_t(i);
    r.ignore_eos = i % 5 == 0;
    out.push_back(std::move(r));
  }
  return out;
}

// Each request alone through the plain loop on a fresh sequence.
std::vector<Outcome> run_alone(Engine& engine, const std::vector<GenerationRequest>& requests) {
  DeepseekLm lm(engine);
  Generator generator(lm, tokenizer());
  std::vector<Outcome> out;
  for (const auto& r : requests) {
    auto seq = lm.new_sequence();
    auto state = generator.generate(r, *seq, {});
    out.push_back({ids(*state), state->text, state->finish, 0, false, true});
  }
  return out;
}

// KV blocks in use on each rank: the most seen during a run, and at its end.
struct BlockUse {
  std::vector<int64_t> peak, left;
};

// Every request through one scheduler: arrivals spread over the steps, cancellations of `cancel` (by index) at
// the step given, a KV cache of `kv_tokens` (on each rank that holds sequences).
std::vector<Outcome> run_batched(Engine& engine, const std::vector<GenerationRequest>& requests,
                                 const std::map<size_t, int>& cancel, int64_t kv_tokens, BlockUse* blocks) {
  DeepseekLm lm(engine);
  // A budget of kv_tokens per main layer row: (latent + rope) values per token per layer.
  const ModelConfig& c = engine.config();
  const uint64_t row = uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * 4;
  lm.use_kv_pools(engine.create_kv_pools(
      uint64_t(kv_tokens * engine.sequence_ranks()) * row * uint64_t(c.num_hidden_layers + 1), 32));
  Generator generator(lm, tokenizer());
  SchedulerOptions so;
  so.max_batch_tokens = 48;  // prompts of up to 170 tokens go in several chunks
  so.max_running = 12;
  BatchScheduler scheduler(generator, so);
  std::vector<Outcome> out(requests.size());
  std::vector<uint64_t> id(requests.size(), 0);
  std::vector<bool> cancel_sent(requests.size(), false);
  size_t next = 0;
  int step = 0;
  while (next < requests.size() || !scheduler.idle()) {
    // 0–5 arrivals per step.
    const size_t arrivals = size_t(step % 6);
    for (size_t a = 0; a < arrivals && next < requests.size(); ++a, ++next) {
      const size_t i = next;
      id[i] = scheduler.add(
          requests[i],
          [&out, i](const RequestState& s, size_t, std::string_view) { out[i].tokens = ids(s); },
          [&out, i](const RequestState* s, bool cancelled, const std::string& error) {
            EXPECT_EQ(error, "") << "request " << i;
            out[i].finished = true;
            out[i].cancelled = cancelled;
            if (s) {
              out[i].tokens = ids(*s);
              out[i].text = s->text;
              out[i].finish = s->finish;
              out[i].cached = s->stats.cached_prompt_tokens;
            }
          });
    }
    // A cancel is sent at its step, or as soon as the request has arrived after it.
    for (const auto& [i, at] : cancel)
      if (at <= step && id[i] && !cancel_sent[i]) scheduler.cancel(id[i]), cancel_sent[i] = true;
    scheduler.step();
    ++step;
    if (step % 8 == 0) {
      const std::vector<KvUsage> usage = engine.kv_usage();
      blocks->peak.resize(usage.size(), 0);
      for (size_t r = 0; r < usage.size(); ++r) blocks->peak[r] = std::max(blocks->peak[r], usage[r].used_blocks);
    }
    EXPECT_LT(step, 5000) << "the scheduler does not make progress";
    if (step >= 5000) break;
  }
  blocks->left.clear();
  for (const KvUsage& u : engine.kv_usage()) blocks->left.push_back(u.used_blocks);
  return out;
}

void expect_same(const std::vector<Outcome>& alone, const std::vector<Outcome>& batched,
                 const std::map<size_t, int>& cancel, const std::string& label) {
  int hits = 0, stopped = 0;
  for (size_t i = 0; i < alone.size(); ++i) {
    ASSERT_TRUE(batched[i].finished) << label << " request " << i;
    if (cancel.count(i)) {
      ASSERT_TRUE(batched[i].cancelled) << label << " request " << i;
      // What it produced before the cancel is the start of its own output.
      ASSERT_LE(batched[i].tokens.size(), alone[i].tokens.size());
      EXPECT_TRUE(std::equal(batched[i].tokens.begin(), batched[i].tokens.end(), alone[i].tokens.begin()))
          << label << " request " << i;
      continue;
    }
    EXPECT_FALSE(batched[i].cancelled) << label << " request " << i;
    EXPECT_EQ(batched[i].tokens, alone[i].tokens) << label << " request " << i;
    EXPECT_EQ(batched[i].text, alone[i].text) << label << " request " << i;
    EXPECT_EQ(batched[i].finish, alone[i].finish) << label << " request " << i;
    hits += batched[i].cached > 0;
    stopped += alone[i].finish == FinishReason::StopString;
  }
  EXPECT_GE(hits, 10) << label << ": requests sharing the 150-token prefix should find it cached";
  EXPECT_GE(stopped, 5) << label << ": stop strings should end some requests";
}

// Stop strings taken from what each request generates alone, so that they do fire (inside the output).
std::vector<GenerationRequest> with_stop_strings(Engine& engine, std::vector<GenerationRequest> requests) {
  const std::vector<Outcome> plain = run_alone(engine, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    const std::string& text = plain[i].text;
    if (i % 4 == 3 && text.size() >= 6) requests[i].stop = {text.substr(text.size() / 2, 2)};
  }
  return requests;
}

const std::map<size_t, int> kCancel = {{4, 0}, {9, 3}, {20, 12}, {33, 20}, {50, 25}, {61, 30}};

TEST(BatchScheduler, EveryRequestAsIfAloneOneProcess) {
  auto engine = Engine::open(model_dir(), options());
  const auto requests = with_stop_strings(*engine, workload(72));
  const std::vector<Outcome> alone = run_alone(*engine, requests);
  BlockUse blocks;
  // Room for about five requests' prompts and outputs at once: the rest wait for blocks.
  const std::vector<Outcome> batched = run_batched(*engine, requests, kCancel, 900, &blocks);
  expect_same(alone, batched, kCancel, "one process");
  EXPECT_EQ(blocks.left, std::vector<int64_t>{0}) << "KV blocks still held after every request ended";
}

void run_on_ranks(int ranks) {
  std::vector<GenerationRequest> requests;
  std::vector<Outcome> alone;
  {
    auto engine = Engine::open(model_dir(), options());
    requests = with_stop_strings(*engine, workload(64));
    alone = run_alone(*engine, requests);
  }
  std::vector<Outcome> batched;
  BlockUse blocks;
  run_thread_ranks(ranks, [&](Communicator& comm) {
    auto engine = Engine::open(model_dir(), options(), comm);
    if (!engine->is_leader()) {
      engine->follow();  // hosts its share of the experts and of the requests
      return;
    }
    batched = run_batched(*engine, requests, kCancel, 900, &blocks);
    engine->finish();
  });
  expect_same(alone, batched, kCancel, std::to_string(ranks) + " ranks");
  // Data-parallel attention: every rank held requests' caches, and gave every block back.
  ASSERT_EQ(blocks.peak.size(), size_t(ranks));
  for (int r = 0; r < ranks; ++r) EXPECT_GT(blocks.peak[size_t(r)], 0) << "rank " << r << " never held a request";
  EXPECT_EQ(blocks.left, std::vector<int64_t>(size_t(ranks), 0)) << "KV blocks still held after every request ended";
}

TEST(BatchScheduler, EveryRequestAsIfAloneOnTwoRanks) { run_on_ranks(2); }
TEST(BatchScheduler, EveryRequestAsIfAloneOnFourRanks) { run_on_ranks(4); }

TEST(BatchScheduler, ARequestThatCanNeverFitIsRefusedAtOnce) {
  auto engine = Engine::open(model_dir(), options());
  DeepseekLm lm(*engine);
  const ModelConfig& c = engine->config();
  const uint64_t row = uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * 4;
  lm.use_kv_pools(engine->create_kv_pools(256 * row * uint64_t(c.num_hidden_layers + 1), 32));
  Generator generator(lm, tokenizer());
  BatchScheduler scheduler(generator, SchedulerOptions{});
  GenerationRequest r;
  r.prompt.assign(200, 5);
  r.max_tokens = 100;
  try {
    scheduler.add(r, {}, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(scheduler.idle());
  r.max_tokens = 0;
  EXPECT_THROW(scheduler.add(r, {}, {}), Error);  // invalid requests are refused at once too
}

}  // namespace
}  // namespace deepmoe
