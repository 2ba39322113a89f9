#include "sampling/stop_string_matcher.h"

#include <gtest/gtest.h>

#include "sampling/rng.h"

namespace deepmoe {
namespace {

// Feeds pieces one at a time; returns everything emitted (plus flush when no stop matched).
std::string run(StopStringMatcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += m.push(p);
  out += m.flush();
  return out;
}

// Reference, one byte at a time: at the first end position where some stop string is complete, the text
// before the longest stop string ending there; the whole text if none ever completes.
std::string reference(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t longest = 0;
    for (const std::string& s : stops)
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) longest = std::max(longest, s.size());
    if (longest > 0) return text.substr(0, end - longest);
  }
  return text;
}

TEST(StopStringMatcher, StopSplitAcrossTokensIsExcluded) {
  StopStringMatcher m({"</end>"});
  EXPECT_EQ(m.push("Hello </"), "Hello ");
  EXPECT_EQ(m.held_bytes(), 2u);
  EXPECT_EQ(m.push("en"), "");
  EXPECT_EQ(m.push("d> trailing"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched_stop(), "</end>");
  EXPECT_EQ(m.push("more"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStringMatcher, FalseStartIsReleased) {
  StopStringMatcher m({"STOP"});
  EXPECT_EQ(m.push("ab ST"), "ab ");
  EXPECT_EQ(m.push("O"), "");
  EXPECT_EQ(m.push("P!"), "");
  EXPECT_TRUE(m.stopped());
  StopStringMatcher n({"STOP"});
  EXPECT_EQ(n.push("ab ST"), "ab ");
  EXPECT_EQ(n.push("OX"), "STOX");
  EXPECT_FALSE(n.stopped());
  EXPECT_EQ(n.push("STO"), "");
  EXPECT_EQ(n.flush(), "STO");
}

TEST(StopStringMatcher, OverlappingPrefixes) {
  // "aab" after "aaab": the matcher must not drop the first 'a' when the partial match "aa" fails at the third.
  StopStringMatcher m({"aab"});
  EXPECT_EQ(run(m, {"a", "a", "a", "b", "c"}), "a");
  StopStringMatcher same_end({"b", "aab"});  // both end at the same byte: the longer one is cut
  EXPECT_EQ(run(same_end, {"xa", "ab"}), "x");
  EXPECT_EQ(same_end.matched_stop(), "aab");
  EXPECT_TRUE(m.stopped());
  StopStringMatcher n({"abab"});
  EXPECT_EQ(run(n, {"aa", "ba", "b", "x"}), "a");
  EXPECT_TRUE(n.stopped());
}

TEST(StopStringMatcher, FirstCompletedOfSeveralStopsWins) {
  StopStringMatcher m({"world", "lo w", "xyz"});
  EXPECT_EQ(run(m, {"hel", "lo wor", "ld"}), "hel");
  EXPECT_EQ(m.matched_stop(), "lo w");
  // "bc" completes before "abcd" could, so it wins although "abcd" starts earlier; the outcome does not
  // depend on where the token boundaries fall.
  StopStringMatcher n({"abcd", "bc"});
  EXPECT_EQ(run(n, {"xab", "cd"}), "xa");
  EXPECT_EQ(n.matched_stop(), "bc");
}

TEST(StopStringMatcher, StopInsideOneTokenAndAtStart) {
  StopStringMatcher m({"\n\n"});
  EXPECT_EQ(m.push("one\n\ntwo"), "one");
  StopStringMatcher n({"x"});
  EXPECT_EQ(n.push("xyz"), "");
  EXPECT_TRUE(n.stopped());
}

TEST(StopStringMatcher, NoStopsPassesEverythingThrough) {
  StopStringMatcher m({});
  EXPECT_EQ(m.push("abc"), "abc");
  EXPECT_EQ(m.held_bytes(), 0u);
}

TEST(StopStringMatcher, MultibyteTextIsNotSplitInsideACharacter) {
  StopStringMatcher m({"。\n"});
  // "你好。" then "\n": the held part is exactly the full-width stop's first character.
  EXPECT_EQ(m.push("你好。"), "你好");
  EXPECT_EQ(m.push("\n后"), "");
  EXPECT_TRUE(m.stopped());
}

TEST(StopStringMatcher, RandomSplitsMatchReference) {
  Rng rng(77);
  const std::string alphabet = "ab c\n";
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text;
    const int len = static_cast<int>(rng.uniform() * 40);
    for (int i = 0; i < len; ++i) text += alphabet[static_cast<size_t>(rng.uniform() * alphabet.size())];
    std::vector<std::string> stops;
    const int n_stops = 1 + static_cast<int>(rng.uniform() * 3);
    for (int s = 0; s < n_stops; ++s) {
      std::string stop;
      const int slen = 1 + static_cast<int>(rng.uniform() * 4);
      for (int i = 0; i < slen; ++i) stop += alphabet[static_cast<size_t>(rng.uniform() * 3)];
      stops.push_back(stop);
    }
    std::vector<std::string> pieces;
    for (size_t pos = 0; pos < text.size();) {
      const size_t n = std::min(text.size() - pos, 1 + static_cast<size_t>(rng.uniform() * 5));
      pieces.push_back(text.substr(pos, n));
      pos += n;
    }
    StopStringMatcher m(stops);
    std::string emitted;
    for (const std::string& p : pieces) {
      emitted += m.push(p);
      // Never emit text that a later piece could turn into part of a stop string.
      ASSERT_EQ(emitted, reference(text, stops).substr(0, std::min(emitted.size(), reference(text, stops).size())));
    }
    emitted += m.flush();
    const std::string expected = reference(text, stops);
    ASSERT_EQ(emitted, expected) << "text '" << text << "'";
    EXPECT_EQ(m.stopped(), expected.size() != text.size());
  }
}

}  // namespace
}  // namespace deepmoe
