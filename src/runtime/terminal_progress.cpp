#include "runtime/terminal_progress.h"

#include <unistd.h>

#include <algorithm>
#include <string>

namespace deepmoe {

TerminalProgress::TerminalProgress(std::FILE* stream) : stream_(stream), enabled_(isatty(fileno(stream)) == 1) {}

TerminalProgress::~TerminalProgress() { finish(); }

void TerminalProgress::update(std::string_view label, double fraction) {
  if (!enabled_) return;
  constexpr int kWidth = 30;
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * kWidth + 0.5);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  std::fprintf(stream_, "\r\033[2K[%s] %3d%% %.*s", bar.c_str(), static_cast<int>(fraction * 100 + 0.5),
               static_cast<int>(label.size()), label.data());
  std::fflush(stream_);
  drawn_ = true;
}

void TerminalProgress::finish() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(stream_, "\r\033[2K");
  std::fflush(stream_);
  drawn_ = false;
}

}  // namespace deepmoe
