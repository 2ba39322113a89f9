#include "server/sequential_runtime_backend.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"
#include "parallel/expert_load_stats.h"

namespace deepmoe::server {

SequentialRuntimeBackend::SequentialRuntimeBackend(LoadedModel& model, SequentialBackendOptions options)
    : model_(model), options_(options), generator_(*model.lm, *model.tokenizer) {
  options_.cached_sequences = std::max<size_t>(options_.cached_sequences, 1);
  snapshot_engine_metrics();
  worker_ = std::thread([this] { run(); });
}

SequentialRuntimeBackend::~SequentialRuntimeBackend() { stop(); }

Admission SequentialRuntimeBackend::submit(std::vector<GenerationRequest> choices,
                                           std::shared_ptr<GenerationStream> stream) {
  DEEPMOE_CHECK(stream && stream->choices() == choices.size(), "one stream slot per choice");
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Admission::Stopped;
    if (int64_t(queue_.size() + choices.size()) > options_.max_waiting) return Admission::QueueFull;
    for (size_t i = 0; i < choices.size(); ++i) queue_.push_back({std::move(choices[i]), stream, i});
  }
  wake_.notify_one();
  return Admission::Accepted;
}

void SequentialRuntimeBackend::cancel(const std::shared_ptr<GenerationStream>& stream) {
  stream->cancel();  // the running choice sees it at its next step
  std::vector<Job> removed;
  {
    std::lock_guard lock(mutex_);
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->stream == stream) {
        removed.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Job& job : removed) job.stream->finish(job.choice, ChoiceEnd{.cancelled = true});
}

BackendLoad SequentialRuntimeBackend::load() const {
  std::lock_guard lock(mutex_);
  return {running_ ? 1 : 0, int64_t(queue_.size())};
}

std::string SequentialRuntimeBackend::metrics_text() const {
  std::lock_guard lock(mutex_);
  return engine_metrics_;
}

void SequentialRuntimeBackend::stop() {
  std::vector<Job> removed;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (running_) running_->cancel();
    removed.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
    queue_.clear();
  }
  wake_.notify_all();
  for (Job& job : removed) job.stream->finish(job.choice, ChoiceEnd{.cancelled = true});
  if (worker_.joinable()) worker_.join();
}

void SequentialRuntimeBackend::run() {
  while (true) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      job = std::move(queue_.front());
      queue_.pop_front();
      running_ = job.stream;
    }
    run_job(job);
    snapshot_engine_metrics();
    std::lock_guard lock(mutex_);
    running_.reset();
  }
}

void SequentialRuntimeBackend::run_job(Job& job) {
  GenerationStream& stream = *job.stream;
  if (stream.cancelled()) {
    stream.finish(job.choice, ChoiceEnd{.cancelled = true});
    return;
  }
  try {
    LmSequence& sequence = sequence_for(job.request.prompt);
    auto state = generator_.start(std::move(job.request), sequence);
    while (!state->done()) {
      if (stream.cancelled()) {
        stream.finish(job.choice, ChoiceEnd{.cancelled = true, .stats = state->stats});
        return;
      }
      const size_t before = state->tokens.size();
      const std::string text = generator_.step(*state);
      // A step may add several tokens (grammar-forced ones): each is pushed, the text with the last.
      for (size_t i = before; i < state->tokens.size(); ++i)
        stream.push(job.choice, state->tokens[i], i + 1 == state->tokens.size() ? std::string_view(text) : "");
    }
    stream.finish(job.choice, ChoiceEnd{.reason = state->finish, .stats = state->stats});
  } catch (const std::exception& e) {
    // The request was validated before admission, so this is the engine's fault: the client gets a 500-class
    // error and the worker goes on with the next request.
    stream.finish(job.choice, ChoiceEnd{.error = e.what()});
  }
}

// The cached sequence sharing the longest prefix with `prompt`; with none sharing anything, the least recently
// used one (or a new one while the pool is not full).
LmSequence& SequentialRuntimeBackend::sequence_for(const std::vector<int32_t>& prompt) {
  CachedSequence* best = nullptr;
  size_t best_common = 0;
  for (CachedSequence& c : sequences_) {
    const auto& cached = c.sequence->tokens();
    const size_t limit = std::min(cached.size(), prompt.size());
    size_t common = 0;
    while (common < limit && cached[common] == prompt[common]) ++common;
    if (common > best_common) best = &c, best_common = common;
  }
  if (!best) {
    if (sequences_.size() < options_.cached_sequences) {
      sequences_.push_back({model_.lm->new_sequence(), 0});
      best = &sequences_.back();
    } else {
      best = &*std::min_element(sequences_.begin(), sequences_.end(),
                                [](const CachedSequence& a, const CachedSequence& b) { return a.last_used < b.last_used; });
    }
  }
  best->last_used = ++use_clock_;
  return *best->sequence;
}

// Engine gauges for /metrics, taken on the worker thread between requests (the model's statistics are not
// safe to read while a forward pass runs).
void SequentialRuntimeBackend::snapshot_engine_metrics() {
  std::ostringstream out;
  int64_t cached_tokens = 0;
  for (const CachedSequence& c : sequences_) cached_tokens += c.sequence->length();
  out << "# HELP deepmoe_kv_cached_sequences KV caches held for prefix reuse.\n"
      << "# TYPE deepmoe_kv_cached_sequences gauge\n"
      << "deepmoe_kv_cached_sequences " << sequences_.size() << "\n"
      << "# HELP deepmoe_kv_cached_tokens Tokens held in those KV caches.\n"
      << "# TYPE deepmoe_kv_cached_tokens gauge\n"
      << "deepmoe_kv_cached_tokens " << cached_tokens << "\n";
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
  std::lock_guard lock(mutex_);
  engine_metrics_ = out.str();
}

}  // namespace deepmoe::server
