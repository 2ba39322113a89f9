#include "sampling/stop_string_matcher.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace deepmoe {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const std::string& s : stops_) DEEPMOE_CHECK(!s.empty(), "empty stop string");
}

const std::string& StopStringMatcher::matched_stop() const {
  DEEPMOE_CHECK(matched_ >= 0);
  return stops_[matched_];
}

std::string StopStringMatcher::push(std::string_view text) {
  if (stopped()) return {};
  pending_.append(text);
  if (stops_.empty()) return std::exchange(pending_, {});

  // Generation stops at the first point where some stop string is complete: the match that ends earliest
  // (at equal ends the longer one, which starts earlier). Deciding by the end position makes the result
  // independent of how the text was split into tokens. Held-back text is shorter than the longest stop
  // string, so this search stays small no matter how long the generation runs.
  size_t best_end = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t pos = pending_.find(stops_[i]);
    if (pos == std::string::npos) continue;
    const size_t end = pos + stops_[i].size();
    if (end < best_end || (end == best_end && stops_[i].size() > stops_[matched_].size())) {
      best_end = end;
      matched_ = static_cast<int>(i);
    }
  }
  if (matched_ >= 0) {
    std::string out = pending_.substr(0, best_end - stops_[matched_].size());
    pending_.clear();
    return out;
  }

  // No match yet: hold back the longest suffix that is a proper prefix of some stop string. It starts with
  // the stop string's first byte, so in valid UTF-8 the cut falls on a character boundary.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    const size_t longest = std::min(stop.size() - 1, pending_.size());
    for (size_t len = longest; len > hold; --len) {
      if (std::string_view(pending_).substr(pending_.size() - len) == std::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::flush() {
  if (stopped()) return {};
  return std::exchange(pending_, {});
}

}  // namespace deepmoe
