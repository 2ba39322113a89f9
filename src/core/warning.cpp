#include "core/warning.h"

#include <cstdio>
#include <mutex>
#include <set>

namespace deepmoe {
namespace {

struct WarningState {
  std::mutex mutex;
  WarningHandler handler;
  std::set<std::string, std::less<>> reported;
};

WarningState& state() {
  static WarningState s;
  return s;
}

}  // namespace

WarningHandler set_warning_handler(WarningHandler handler) {
  WarningState& s = state();
  std::lock_guard lock(s.mutex);
  std::swap(s.handler, handler);
  return handler;
}

bool warn_once(std::string_view key, const std::string& message) {
  WarningState& s = state();
  std::lock_guard lock(s.mutex);
  if (!s.reported.emplace(key).second) return false;
  if (s.handler) {
    s.handler(message);
  } else {
    std::fprintf(stderr, "deepmoe: warning: %s\n", message.c_str());
    std::fflush(stderr);
  }
  return true;
}

void reset_warnings() {
  WarningState& s = state();
  std::lock_guard lock(s.mutex);
  s.reported.clear();
}

}  // namespace deepmoe
