#include "progress.h"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "user_terminal.h"

namespace deepmoe::tools {
namespace {

std::atomic<bool> g_quiet{false};

// Bytes of the process now resident in memory (mapped file pages included).
uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * uint64_t(::sysconf(_SC_PAGESIZE));
}

uint64_t safetensors_bytes(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  uint64_t total = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".safetensors") continue;
    std::error_code size_ec;
    const uintmax_t size = it->file_size(size_ec);
    if (!size_ec) total += size;
  }
  return total;
}

std::string gigabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", double(bytes) / 1e9);
  return buf;
}

// The sequence PrefillProgressLm hands out: the inner model's sequence, fed through it.
class ForwardingSequence : public LmSequence {
 public:
  explicit ForwardingSequence(std::unique_ptr<LmSequence> inner) : inner_(std::move(inner)) {}
  LmSequence& inner() { return *inner_; }

 protected:
  void truncate_cache(int64_t n) override { inner_->truncate(n); }

 private:
  std::unique_ptr<LmSequence> inner_;
};

}  // namespace

void add_quiet_option(CLI::App& app) {
  app.add_flag_callback("-q,--quiet", [] { set_quiet(true); },
                        "No progress bars on the terminal (loading, long prompts); results, summaries and "
                        "messages are unchanged");
}

void set_quiet(bool quiet) { g_quiet = quiet; }

bool progress_wanted() { return !g_quiet && is_user_terminal(stderr); }

LoadProgressBar::LoadProgressBar(const std::string& model_dir) : bar_(stderr), enabled_(progress_wanted()) {
  if (enabled_) total_bytes_ = safetensors_bytes(model_dir);
}

LoadProgressBar::~LoadProgressBar() { finish(); }

void LoadProgressBar::draw(std::string_view label, double fraction) {
  std::lock_guard<std::mutex> lock(mutex_);
  bar_.update(label, fraction);
}

void LoadProgressBar::stage(std::string_view name, double fraction) {
  if (!enabled_) return;
  if (name == "loading weights" && total_bytes_ > 0 && !poller_.joinable()) {
    baseline_bytes_ = resident_bytes();
    draw_bytes();
    poller_ = std::thread([this] { poll(); });
    return;
  }
  if (fraction >= 1.0) stop_polling();
  draw(name, fraction);
}

void LoadProgressBar::draw_bytes() {
  const uint64_t now = resident_bytes();
  const uint64_t read = std::min(now > baseline_bytes_ ? now - baseline_bytes_ : 0, total_bytes_);
  // Allocations other than the weights also count: hold at 99% until loading says it is done.
  const double fraction = std::min(double(read) / double(total_bytes_), 0.99);
  draw("loading weights, " + gigabytes(read) + " of " + gigabytes(total_bytes_) + " GB", fraction);
}

void LoadProgressBar::poll() {
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!stop_) draw_bytes();
  }
}

void LoadProgressBar::stop_polling() {
  stop_ = true;
  if (poller_.joinable()) poller_.join();
}

void LoadProgressBar::finish() {
  stop_polling();
  std::lock_guard<std::mutex> lock(mutex_);
  bar_.finish();
}

PrefillProgressLm::PrefillProgressLm(CausalLm& inner, int64_t chunk) : inner_(inner), chunk_(chunk) {}

std::unique_ptr<LmSequence> PrefillProgressLm::new_sequence() {
  return std::make_unique<ForwardingSequence>(inner_.new_sequence());
}

std::vector<float> PrefillProgressLm::forward_tokens(LmSequence& sequence, std::span<const int32_t> tokens) {
  LmSequence& inner = static_cast<ForwardingSequence&>(sequence).inner();
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n <= chunk_ || !progress_wanted()) return inner_.forward(inner, tokens);
  TerminalProgress bar(stderr);
  bar.update("prompt 0 of " + std::to_string(n) + " tokens", 0.0);
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> logits;
  for (int64_t done = 0; done < n; done += chunk_) {
    const int64_t count = std::min(chunk_, n - done);
    logits = inner_.forward(inner, tokens.subspan(size_t(done), size_t(count)));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char label[96];
    std::snprintf(label, sizeof label, "prompt %lld of %lld tokens, %.1f tok/s", (long long)(done + count),
                  (long long)n, seconds > 0 ? double(done + count) / seconds : 0.0);
    bar.update(label, double(done + count) / double(n));
  }
  bar.finish();
  return logits;
}

}  // namespace deepmoe::tools
