// Stop strings matched on the detokenized text as it streams. A stop string may be split over several tokens
// (or several of them may share a prefix), so text that could still be the start of a stop string is held back
// until it is decided; a matched stop string and everything after it are never emitted (OpenAI semantics).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace deepmoe {

class StopStringMatcher {
 public:
  // Stop strings must be non-empty (see validate_stop_strings).
  explicit StopStringMatcher(std::vector<std::string> stops);

  // Adds newly decoded text and returns the part that is now safe to emit. After a match, stopped() is true,
  // the text before the match has been returned and all later input is ignored.
  std::string push(std::string_view text);

  // Generation ended for another reason: returns the held-back text, which is no longer a possible match.
  std::string flush();

  bool stopped() const { return matched_ >= 0; }
  // The stop string that matched: the one completed first in the text (at the same end, the longest).
  const std::string& matched_stop() const;

  // Bytes currently held back as a possible start of a stop string.
  size_t held_bytes() const { return pending_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  int matched_ = -1;
};

}  // namespace deepmoe
