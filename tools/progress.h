// Progress shown while a command works: model loading (bytes read of the checkpoint, %) and long prompt
// prefills (tokens done, tok/s). Drawn on stderr only when it is a terminal — logs, pipes and tests never see
// it — and never with -q/--quiet.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "runtime/causal_lm.h"
#include "runtime/terminal_progress.h"

namespace CLI {
class App;
}

namespace deepmoe::tools {

// Adds -q,--quiet: no progress bars (results, summaries, notices, warnings and errors are unchanged).
void add_quiet_option(CLI::App& app);
void set_quiet(bool quiet);
// Whether progress is drawn: stderr is a terminal and --quiet was not given.
bool progress_wanted();

// The bar while a model folder loads: the share of its *.safetensors bytes brought into memory so far (the
// weights are memory-mapped and read in while loading; the process's resident size tells how far it got).
class LoadProgressBar {
 public:
  explicit LoadProgressBar(const std::string& model_dir);
  ~LoadProgressBar();
  LoadProgressBar(const LoadProgressBar&) = delete;
  LoadProgressBar& operator=(const LoadProgressBar&) = delete;

  // A loading stage begins (load_model_dir's progress callback): "loading weights" starts the byte count.
  void stage(std::string_view name, double fraction);
  // Clears the bar.
  void finish();

 private:
  void draw(std::string_view label, double fraction);
  void draw_bytes();
  void poll();
  void stop_polling();

  TerminalProgress bar_;
  bool enabled_;
  uint64_t total_bytes_ = 0;
  uint64_t baseline_bytes_ = 0;
  std::mutex mutex_;
  std::atomic<bool> stop_{false};
  std::thread poller_;
};

// A model whose long prompts are fed in chunks of `chunk` tokens with a progress bar (tokens done, tok/s), when
// progress is wanted; otherwise it passes every call through unchanged. Sequences must come from its
// new_sequence().
class PrefillProgressLm : public CausalLm {
 public:
  explicit PrefillProgressLm(CausalLm& inner, int64_t chunk = 256);

  int64_t vocab_size() const override { return inner_.vocab_size(); }
  int64_t context_length() const override { return inner_.context_length(); }
  std::vector<int32_t> eos_token_ids() const override { return inner_.eos_token_ids(); }
  std::unique_ptr<LmSequence> new_sequence() override;

 protected:
  std::vector<float> forward_tokens(LmSequence& sequence, std::span<const int32_t> tokens) override;

 private:
  CausalLm& inner_;
  int64_t chunk_;
};

}  // namespace deepmoe::tools
