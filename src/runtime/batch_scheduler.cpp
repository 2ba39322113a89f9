#include "runtime/batch_scheduler.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "runtime/speculative_step.h"

namespace deepmoe {

struct BatchScheduler::Entry {
  uint64_t id = 0;
  GenerationRequest request;  // until admitted
  int64_t kv_need = 0;
  Progress on_progress;
  Finished on_finish;
  bool cancelled = false;
  std::unique_ptr<LmSequence> sequence;
  std::unique_ptr<RequestState> state;
  std::vector<int32_t> feed;  // tokens to feed before the next sample
  size_t fed = 0;             // of those, fed already (prompt chunks)
  std::unique_ptr<SpeculativeStep> speculative;  // this step's drafts, while decoding speculatively
};

BatchScheduler::BatchScheduler(Generator& generator, SchedulerOptions options)
    : generator_(generator), options_(options), capacity_(generator.lm().kv_capacity()) {
  if (options_.max_batch_tokens < 1) throw Error("max_batch_tokens must be >= 1");
  if (options_.max_running < 1) throw Error("max_running must be >= 1");
  if (options_.draft_tokens < 0)
    throw Error("draft tokens must be at least 1, got " + std::to_string(options_.draft_tokens),
                ErrorContext{.field = "draft_tokens"});
  if (options_.draft_tokens > 0) {
    speculative_lm_ = dynamic_cast<SpeculativeLm*>(&generator.lm());
    if (!speculative_lm_) throw Error("speculative decoding in the batch scheduler needs a model with a draft model");
  }
}

BatchScheduler::~BatchScheduler() = default;

int64_t BatchScheduler::kv_need(const GenerationRequest& request) const {
  if (capacity_.tokens <= 0) return 0;
  // A verification forward holds the pending token and its drafts at once: K positions more than the plain loop
  // (drafts stop short of max_tokens, but a request's room is reserved by its worst step).
  const int64_t tokens = int64_t(request.prompt.size()) + request.max_tokens + options_.draft_tokens;
  const int64_t b = std::max<int64_t>(capacity_.block_tokens, 1);
  return (tokens + b - 1) / b * b;
}

uint64_t BatchScheduler::add(GenerationRequest request, Progress on_progress, Finished on_finish) {
  CausalLm& lm = generator_.lm();
  if (auto error = validate_request(request, lm.vocab_size(), lm.context_length())) throw *error;
  auto entry = std::make_unique<Entry>();
  entry->kv_need = kv_need(request);
  const int64_t most = capacity_.per_sequence > 0 ? capacity_.per_sequence : capacity_.tokens;
  if (capacity_.tokens > 0 && entry->kv_need > most)
    throw Error("the prompt (" + std::to_string(request.prompt.size()) + " tokens) and max_tokens (" +
                std::to_string(request.max_tokens) + ") need " + std::to_string(entry->kv_need) +
                " tokens of KV cache, more than the whole cache holds (" + std::to_string(most) + " tokens" +
                (most < capacity_.tokens ? " on one rank" : "") + ")");
  entry->id = next_id_++;
  entry->request = std::move(request);
  entry->on_progress = std::move(on_progress);
  entry->on_finish = std::move(on_finish);
  waiting_.push_back(std::move(entry));
  return waiting_.back()->id;
}

void BatchScheduler::cancel(uint64_t id) {
  for (auto& e : waiting_)
    if (e->id == id) e->cancelled = true;
  for (auto& e : running_)
    if (e->id == id) e->cancelled = true;
}

void BatchScheduler::end(Entry& entry, bool cancelled, const std::string& error) {
  if (entry.on_finish) entry.on_finish(entry.state.get(), cancelled, error);
  entry.state.reset();
  entry.sequence.reset();  // its KV blocks return to the pool
}

void BatchScheduler::fail_all(const std::string& error) {
  for (auto& e : running_) end(*e, false, error);
  for (auto& e : waiting_) end(*e, false, error);
  running_.clear();
  waiting_.clear();
  reserved_ = 0;
}

void BatchScheduler::admit() {
  while (!waiting_.empty() && int64_t(running_.size()) < options_.max_running) {
    Entry& e = *waiting_.front();
    // First come, first served: the cache as a whole, and (when it is spread over ranks) one rank, must have
    // room for the request.
    if (capacity_.tokens > 0 && (reserved_ + e.kv_need > capacity_.tokens || !generator_.lm().has_room(e.kv_need)))
      break;
    std::unique_ptr<Entry> entry = std::move(waiting_.front());
    waiting_.pop_front();
    try {
      // start() may rewrite the prompt (token healing backs off its last tokens): the sequence, with whatever
      // the prefix cache holds of it, is made for the prompt the request will feed.
      auto placeholder = generator_.lm().new_sequence();
      entry->state = generator_.start(std::move(entry->request), *placeholder);
      entry->sequence = generator_.lm().new_sequence(entry->state->request.prompt, entry->kv_need);
      DEEPMOE_CHECK(entry->sequence != nullptr, "the model refused a sequence it said it had room for");
      entry->state->sequence = entry->sequence.get();
      const size_t common = Generator::reuse_prompt_prefix(*entry->state);
      const auto& prompt = entry->state->request.prompt;
      entry->feed.assign(prompt.begin() + std::ptrdiff_t(common), prompt.end());
      entry->fed = 0;
    } catch (const std::exception& e) {
      end(*entry, false, e.what());
      continue;
    }
    reserved_ += entry->kv_need;
    running_.push_back(std::move(entry));
  }
}

void BatchScheduler::step() {
  // Cancellations first: a cancelled request takes no more room in the batch or the cache.
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->cancelled) {
      end(**it, true, "");
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->cancelled) {
      reserved_ -= (*it)->kv_need;
      end(**it, true, "");
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  admit();
  if (running_.empty()) return;

  const auto start = std::chrono::steady_clock::now();
  // Speculative decoding: every decoding request drafts first, all requests' k-th drafts in one call.
  if (speculative_lm_) {
    std::vector<Entry*> drafting;
    for (auto& e : running_) {
      if (e->state->tokens.empty()) continue;
      e->speculative = std::make_unique<SpeculativeStep>(generator_, *e->state, options_.draft_tokens);
      drafting.push_back(e.get());
    }
    while (true) {
      std::vector<LmDraftEntry> calls;
      std::vector<Entry*> callers;
      for (Entry* e : drafting) {
        if (!e->speculative->wants_draft()) continue;
        calls.push_back({e->sequence.get(), e->speculative->draft_input(), e->speculative->continues_draft()});
        callers.push_back(e);
      }
      if (calls.empty()) break;
      const std::vector<std::vector<float>> logits = speculative_lm_->draft_batch(calls);
      for (size_t i = 0; i < callers.size(); ++i) callers[i]->speculative->add_draft(logits[i]);
    }
  }

  // Decode tokens of every request past its prompt (with its drafts), then prompt chunks in admission order.
  std::vector<LmRowsEntry> batch;
  std::vector<Entry*> in_batch;
  std::vector<size_t> chunk;
  int64_t budget = options_.max_batch_tokens;
  for (auto& e : running_) {
    if (e->state->tokens.empty()) continue;
    const std::vector<int32_t>& tokens = e->speculative ? e->speculative->verify_tokens() : e->feed;
    batch.push_back({e->sequence.get(), tokens, e->speculative ? tokens.size() : 1});
    in_batch.push_back(e.get());
    chunk.push_back(tokens.size());
    budget -= int64_t(tokens.size());
  }
  for (auto& e : running_) {
    if (!e->state->tokens.empty() || budget <= 0) continue;
    const size_t left = e->feed.size() - e->fed;
    const size_t n = std::min<size_t>(left, size_t(budget));
    batch.push_back({e->sequence.get(), std::span<const int32_t>(e->feed).subspan(e->fed, n), n == left ? 1u : 0u});
    in_batch.push_back(e.get());
    chunk.push_back(n);
    budget -= int64_t(n);
  }
  if (batch.empty()) return;
  std::vector<std::vector<float>> logits;
  if (speculative_lm_) {
    logits = speculative_lm_->forward_rows_batch(batch);
  } else {
    std::vector<LmBatchEntry> plain;
    for (const LmRowsEntry& e : batch) plain.push_back({e.sequence, e.tokens, e.rows > 0});
    std::vector<std::vector<float>> rows = generator_.lm().forward_batch(plain);
    size_t row = 0;
    for (const LmRowsEntry& e : batch) logits.push_back(e.rows > 0 ? std::move(rows[row++]) : std::vector<float>());
  }

  for (size_t i = 0; i < in_batch.size(); ++i) {
    Entry& e = *in_batch[i];
    if (batch[i].rows == 0) {
      e.fed += chunk[i];  // a prompt chunk that is not the last
      continue;
    }
    const size_t before = e.state->tokens.size();
    try {
      std::string text;
      if (e.speculative) {
        const int64_t drafts = int64_t(e.speculative->drafts());
        const int64_t accepted_before = e.state->stats.accepted_draft_tokens;
        text = e.speculative->verify(logits[i], start);
        e.speculative.reset();
        ++speculation_.verify_steps;
        speculation_.draft_tokens += drafts;
        speculation_.accepted_draft_tokens += e.state->stats.accepted_draft_tokens - accepted_before;
      } else if (speculative_lm_) {
        text = speculative_first_token(generator_, *e.state, logits[i], start);
      } else {
        text = generator_.after_forward(*e.state, logits[i], start);
      }
      if (e.on_progress) e.on_progress(*e.state, before, text);
    } catch (const std::exception& ex) {
      e.cancelled = true;  // removed below
      reserved_ -= e.kv_need;
      end(e, false, ex.what());
      e.kv_need = 0;
      continue;
    }
    if (!e.state->done()) {
      e.feed = Generator::unfed_tokens(*e.state);
      e.fed = 0;
    }
  }
  for (auto it = running_.begin(); it != running_.end();) {
    Entry& e = **it;
    if (!e.state) {  // failed above
      it = running_.erase(it);
    } else if (e.state->done()) {
      reserved_ -= e.kv_need;
      end(e, false, "");
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace deepmoe
