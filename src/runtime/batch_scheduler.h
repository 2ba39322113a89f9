// Continuous batching: many requests advance together, one model step at a time. Each step packs the decode
// tokens of every running request with chunks of the prompts being prefilled, under a token budget; requests are
// admitted first come first served while the KV cache can hold them (each reserves its prompt + max_tokens,
// rounded up to whole blocks), and any request may finish, hit a stop string or be cancelled at any step.
//
// A request's tokens do not depend on what else is batched with it or how its prompt is chunked: the model's
// forward is batch-invariant, each request samples with its own seeded sampler, and the per-request logic (ending
// rules, stop strings, grammar) is Generator's, shared with the one-at-a-time loop.
//
// With speculative decoding (SchedulerOptions::draft_tokens = K > 0, on a SpeculativeLm) each step first drafts
// up to K tokens for every decoding request (K batched draft calls), then each decoding request contributes its
// pending token and its drafts as one entry of up to K + 1 positions, logits at each, to the step's forward (prompt
// chunks still fill the budget), and accepts its own number of them (runtime/speculative_step.h, the one-request
// loop's code): the caches keep only accepted positions. A request's tokens are those of the one-request
// speculative loop with the same seed, and greedy ones those of the plain loop.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/generator.h"
#include "runtime/speculative_lm.h"

namespace deepmoe {

struct SchedulerOptions {
  // Tokens per step over all requests: prompt chunks fill what the decode tokens leave. Decode tokens of running
  // requests always go in, so a step may exceed it by them.
  int64_t max_batch_tokens = 512;
  int64_t max_running = 64;  // requests generating at once; more wait
  // Speculative decoding: drafts per decoding request and step (0: off). Needs the generator's model to be a
  // SpeculativeLm.
  int draft_tokens = 0;
};

// Speculative decoding over a scheduler's life: verification entries (one per decoding request and step), drafts
// proposed, drafts accepted.
struct SpeculationCounters {
  int64_t verify_steps = 0;
  int64_t draft_tokens = 0;
  int64_t accepted_draft_tokens = 0;
};

class BatchScheduler {
 public:
  // After a step that added tokens [first_new_token, state.tokens.size()) to the request, with the text that is
  // now final (possibly empty).
  using Progress = std::function<void(const RequestState& state, size_t first_new_token, std::string_view text)>;
  // Once per request: it finished (state->finish), was cancelled, or failed (error not empty). `state` is null
  // for a request that ended before it was admitted.
  using Finished = std::function<void(const RequestState* state, bool cancelled, const std::string& error)>;

  BatchScheduler(Generator& generator, SchedulerOptions options);
  ~BatchScheduler();

  // Checks the request (a deepmoe::Error names the field; one that could never fit the KV cache is refused here,
  // not left waiting) and queues it. Returns its id.
  uint64_t add(GenerationRequest request, Progress on_progress, Finished on_finish);
  // Ends the request at the next step (queued or running); its KV blocks return to the pool.
  void cancel(uint64_t id);

  // One model step: admits what fits, runs the batch, samples, reports. Does nothing when idle(). An error
  // from the model propagates; the caller then ends everything with fail_all().
  void step();
  // Ends every queued and running request with `error` (their KV blocks return to the pool).
  void fail_all(const std::string& error);
  bool idle() const { return waiting_.empty() && running_.empty(); }
  size_t running() const { return running_.size(); }
  size_t waiting() const { return waiting_.size(); }
  // KV tokens reserved by the running requests (0 when the cache is unbounded).
  int64_t reserved_kv_tokens() const { return reserved_; }
  const SpeculationCounters& speculation() const { return speculation_; }

 private:
  struct Entry;

  int64_t kv_need(const GenerationRequest& request) const;
  void admit();
  void end(Entry& entry, bool cancelled, const std::string& error);

  Generator& generator_;
  SchedulerOptions options_;
  SpeculativeLm* speculative_lm_ = nullptr;  // when drafting
  SpeculationCounters speculation_;
  KvCapacity capacity_;
  uint64_t next_id_ = 1;
  int64_t reserved_ = 0;
  std::deque<std::unique_ptr<Entry>> waiting_;
  std::vector<std::unique_ptr<Entry>> running_;  // in admission order
};

}  // namespace deepmoe
