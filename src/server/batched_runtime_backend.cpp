#include "server/batched_runtime_backend.h"

#include <algorithm>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "parallel/expert_load_stats.h"

namespace deepmoe::server {

namespace {

std::unique_ptr<MtpSpeculativeLm> speculative_lm(LoadedModel& model, const BatchedBackendOptions& options) {
  if (options.draft_tokens <= 0) return nullptr;
  return std::make_unique<MtpSpeculativeLm>(*model.engine);  // throws for a model without an MTP layer
}

}  // namespace

BatchedRuntimeBackend::BatchedRuntimeBackend(LoadedModel& model, BatchedBackendOptions options)
    : model_(model),
      options_(options),
      speculative_lm_(speculative_lm(model, options)),
      lm_(speculative_lm_ ? static_cast<CausalLm&>(*speculative_lm_) : *model.lm),
      generator_(lm_, *model.tokenizer) {
  Engine& engine = *model.engine;
  const uint64_t budget =
      options_.kv_bytes > 0 ? options_.kv_bytes : default_kv_budget_bytes(engine.weight_bytes(), physical_memory_bytes());
  KvPools pools = engine.create_kv_pools(budget, options_.kv_block_tokens);
  if (speculative_lm_)
    speculative_lm_->use_kv_pools(std::move(pools));
  else
    model.lm->use_kv_pools(std::move(pools));
  SchedulerOptions so;
  so.max_running = options_.max_running;
  so.max_batch_tokens = options_.max_batch_tokens;
  so.draft_tokens = std::max(options_.draft_tokens, 0);
  scheduler_ = std::make_unique<BatchScheduler>(generator_, so);
  snapshot_engine_metrics();
  worker_ = std::thread([this] { run(); });
}

BatchedRuntimeBackend::~BatchedRuntimeBackend() { stop(); }

Admission BatchedRuntimeBackend::submit(std::vector<GenerationRequest> choices,
                                        std::shared_ptr<GenerationStream> stream) {
  DEEPMOE_CHECK(stream && stream->choices() == choices.size(), "one stream slot per choice");
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Admission::Stopped;
    const int64_t waiting = in_flight_ - running_count_;
    if (waiting + int64_t(choices.size()) > options_.max_waiting) return Admission::QueueFull;
    for (size_t i = 0; i < choices.size(); ++i) inbox_.push_back({std::move(choices[i]), stream, i});
    in_flight_ += int64_t(choices.size());
  }
  wake_.notify_one();
  return Admission::Accepted;
}

void BatchedRuntimeBackend::cancel(const std::shared_ptr<GenerationStream>& stream) {
  stream->cancel();  // the worker sees it before its next step
  std::vector<Job> removed;
  {
    std::lock_guard lock(mutex_);
    for (auto it = inbox_.begin(); it != inbox_.end();) {
      if (it->stream == stream) {
        removed.push_back(std::move(*it));
        it = inbox_.erase(it);
      } else {
        ++it;
      }
    }
  }
  wake_.notify_one();
  for (Job& job : removed) {
    job.stream->finish(job.choice, ChoiceEnd{.cancelled = true});
    finished_one();
  }
}

void BatchedRuntimeBackend::finished_one() {
  std::lock_guard lock(mutex_);
  --in_flight_;
}

BackendLoad BatchedRuntimeBackend::load() const {
  std::lock_guard lock(mutex_);
  // Running as of the last step boundary, like the engine's gauges in metrics_text(): a choice that ends inside a
  // step still holds its KV blocks in that snapshot, so /metrics never shows it gone while its blocks are not.
  const int64_t running = running_count_;
  return {running, std::max<int64_t>(0, in_flight_ - running)};
}

std::string BatchedRuntimeBackend::metrics_text() const {
  std::lock_guard lock(mutex_);
  return engine_metrics_;
}

void BatchedRuntimeBackend::stop() {
  std::vector<Job> removed;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    removed.assign(std::make_move_iterator(inbox_.begin()), std::make_move_iterator(inbox_.end()));
    inbox_.clear();
  }
  wake_.notify_all();
  for (Job& job : removed) {
    job.stream->finish(job.choice, ChoiceEnd{.cancelled = true});
    finished_one();
  }
  if (worker_.joinable()) worker_.join();
}

// Hands the new choices to the scheduler; one it refuses (it could never fit the KV cache) ends with that error.
void BatchedRuntimeBackend::take_new_jobs(std::deque<Job>& jobs) {
  for (Job& job : jobs) {
    if (job.stream->cancelled()) {
      job.stream->finish(job.choice, ChoiceEnd{.cancelled = true});
      finished_one();
      continue;
    }
    std::shared_ptr<GenerationStream> stream = job.stream;
    const size_t choice = job.choice;
    auto id = std::make_shared<uint64_t>(0);  // known once added; the callbacks run only in later steps
    try {
      const uint64_t added = scheduler_->add(
          std::move(job.request),
          [stream, choice](const RequestState& state, size_t first_new, std::string_view text) {
            // A step may add several tokens (grammar-forced ones): each is pushed, the text with the last.
            for (size_t i = first_new; i < state.tokens.size(); ++i)
              stream->push(choice, state.tokens[i], i + 1 == state.tokens.size() ? text : std::string_view());
          },
          [this, stream, choice, id](const RequestState* state, bool cancelled, const std::string& error) {
            ended_.push_back(*id);
            ChoiceEnd end;
            if (state) end.stats = state->stats;
            if (!error.empty()) {
              end.error = error;
            } else if (cancelled) {
              end.cancelled = true;
            } else {
              end.reason = state->finish;
            }
            stream->finish(choice, std::move(end));
            finished_one();
          });
      *id = added;
      active_[added] = {stream, choice};
    } catch (const std::exception& e) {
      job.stream->finish(job.choice, ChoiceEnd{.error = e.what()});
      finished_one();
    }
  }
}

void BatchedRuntimeBackend::run() {
  while (true) {
    std::deque<Job> jobs;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !inbox_.empty() || !scheduler_->idle(); });
      if (stopping_) break;
      jobs.swap(inbox_);
    }
    take_new_jobs(jobs);
    for (auto it = active_.begin(); it != active_.end(); ++it)
      if (it->second.stream->cancelled()) scheduler_->cancel(it->first);
    try {
      scheduler_->step();
    } catch (const std::exception& e) {
      // The engine failed inside a step (not a request's fault): every choice in the batch or the queue ends with
      // the error (the client gets a 500-class error) and the worker goes on with the next requests.
      scheduler_->fail_all(e.what());
    }
    // Requests that ended in the step (finished, cancelled, failed) leave the table; a cancel that arrives
    // during a step is seen before the next one.
    for (uint64_t id : ended_) active_.erase(id);
    ended_.clear();
    snapshot_engine_metrics();
  }
  // Stopping: whatever still runs or waits is cancelled, its client gets an error event.
  for (auto& [id, r] : active_) scheduler_->cancel(id);
  scheduler_->step();
  active_.clear();
  ended_.clear();
}

// Engine gauges for /metrics, taken on the worker thread between steps (the model's statistics are not safe to
// read while a forward pass runs).
void BatchedRuntimeBackend::snapshot_engine_metrics() {
  std::ostringstream out;
  const KvPools& pools = speculative_lm_ ? speculative_lm_->kv_pools() : model_.lm->kv_pools();
  Engine& engine = *model_.engine;
  // Counting another rank's blocks is a step of its own: done when idle (so a leak shows at once) and at most
  // four times a second while requests run.
  const auto now = std::chrono::steady_clock::now();
  if (engine.ranks() == 1 || scheduler_->idle() || now - kv_usage_at_ >= std::chrono::milliseconds(250)) {
    kv_usage_ = engine.kv_usage();
    kv_usage_at_ = now;
  }
  if (pools.main) {
    KvUsage all;
    for (const KvUsage& u : kv_usage_) {
      all.used_blocks += u.used_blocks;
      all.cached_blocks += u.cached_blocks;
      all.max_blocks += u.max_blocks;
      all.mtp_used_blocks += u.mtp_used_blocks;
    }
    out << "# HELP deepmoe_kv_block_tokens Tokens per KV cache block.\n"
        << "# TYPE deepmoe_kv_block_tokens gauge\n"
        << "deepmoe_kv_block_tokens " << pools.main->layout().block_tokens << "\n"
        << "# HELP deepmoe_kv_blocks_total KV cache blocks the budget allows (every rank that holds requests).\n"
        << "# TYPE deepmoe_kv_blocks_total gauge\n"
        << "deepmoe_kv_blocks_total " << all.max_blocks << "\n"
        << "# HELP deepmoe_kv_blocks_used KV cache blocks held by running requests.\n"
        << "# TYPE deepmoe_kv_blocks_used gauge\n"
        << "deepmoe_kv_blocks_used " << all.used_blocks << "\n"
        << "# HELP deepmoe_kv_blocks_cached KV cache blocks no request holds, kept for prefix reuse.\n"
        << "# TYPE deepmoe_kv_blocks_cached gauge\n"
        << "deepmoe_kv_blocks_cached " << all.cached_blocks << "\n";
    if (pools.mtp)
      out << "# HELP deepmoe_kv_mtp_blocks_used Blocks of the MTP module's KV cache held by running requests.\n"
          << "# TYPE deepmoe_kv_mtp_blocks_used gauge\n"
          << "deepmoe_kv_mtp_blocks_used " << all.mtp_used_blocks << "\n";
  }
  const ExpertLoadStats& stats = model_.engine->executor().load_stats();
  std::ostringstream max_lines, mean_lines;
  for (int layer = 0; layer < stats.n_layers(); ++layer) {
    if (stats.batches_in_window(layer) == 0) continue;
    const std::vector<int64_t> load = stats.window_load(layer);
    if (load.empty()) continue;
    int64_t total = 0, most = 0;
    for (int64_t v : load) total += v, most = std::max(most, v);
    const double mean = double(total) / double(load.size());
    max_lines << "deepmoe_expert_load_max{moe_layer=\"" << layer << "\"} " << most << "\n";
    mean_lines << "deepmoe_expert_load_mean{moe_layer=\"" << layer << "\"} " << mean << "\n";
  }
  out << "# HELP deepmoe_expert_load_max Most tokens routed to one expert of the MoE layer over the load window.\n"
      << "# TYPE deepmoe_expert_load_max gauge\n"
      << max_lines.str()
      << "# HELP deepmoe_expert_load_mean Mean tokens per expert of the MoE layer over the load window.\n"
      << "# TYPE deepmoe_expert_load_mean gauge\n"
      << mean_lines.str();
  if (speculative_lm_) {
    const SpeculationCounters& c = scheduler_->speculation();
    // The gauges are ratios of the counters above: every digit, so a reader recomputing them agrees (the stream's
    // default 6 digits lose 1e-6 once the mean passes 1).
    out.precision(std::numeric_limits<double>::max_digits10);
    out << "# HELP deepmoe_speculative_verify_steps_total Verification entries run (one per decoding request and step).\n"
        << "# TYPE deepmoe_speculative_verify_steps_total counter\n"
        << "deepmoe_speculative_verify_steps_total " << c.verify_steps << "\n"
        << "# HELP deepmoe_speculative_draft_tokens_total Draft tokens the MTP module proposed.\n"
        << "# TYPE deepmoe_speculative_draft_tokens_total counter\n"
        << "deepmoe_speculative_draft_tokens_total " << c.draft_tokens << "\n"
        << "# HELP deepmoe_speculative_accepted_tokens_total Draft tokens verification accepted.\n"
        << "# TYPE deepmoe_speculative_accepted_tokens_total counter\n"
        << "deepmoe_speculative_accepted_tokens_total " << c.accepted_draft_tokens << "\n"
        << "# HELP deepmoe_speculative_acceptance_rate Accepted over proposed draft tokens since the start.\n"
        << "# TYPE deepmoe_speculative_acceptance_rate gauge\n"
        << "deepmoe_speculative_acceptance_rate "
        << (c.draft_tokens > 0 ? double(c.accepted_draft_tokens) / double(c.draft_tokens) : 0.0) << "\n"
        << "# HELP deepmoe_speculative_accepted_tokens_per_step Mean draft tokens accepted per verification step "
           "(each step also emits one token of the main model's own).\n"
        << "# TYPE deepmoe_speculative_accepted_tokens_per_step gauge\n"
        << "deepmoe_speculative_accepted_tokens_per_step "
        << (c.verify_steps > 0 ? double(c.accepted_draft_tokens) / double(c.verify_steps) : 0.0) << "\n";
  }
  std::lock_guard lock(mutex_);
  engine_metrics_ = out.str();
  running_count_ = int64_t(scheduler_->running());
}

}  // namespace deepmoe::server
