// A one-line progress bar on a terminal. It draws only when the stream is a tty, so logs and pipes (tests, CI)
// get no control characters.
#pragma once

#include <cstdio>
#include <string_view>

namespace deepmoe {

class TerminalProgress {
 public:
  explicit TerminalProgress(std::FILE* stream = stderr);
  ~TerminalProgress();

  bool enabled() const { return enabled_; }
  // Redraws the bar: `label` and fraction in [0, 1].
  void update(std::string_view label, double fraction);
  // Clears the line (the bar leaves nothing behind).
  void finish();

 private:
  std::FILE* stream_;
  bool enabled_;
  bool drawn_ = false;
};

}  // namespace deepmoe
