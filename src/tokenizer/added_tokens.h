// Added tokens (HF tokenizers/src/tokenizer/added_vocabulary.rs): strings matched in the raw text before
// pre-tokenization, leftmost-longest, each becoming its own id. Flags: special (skipped by parse_special=false
// and by decode(skip_special)), lstrip / rstrip (the match swallows whitespace on that side), single_word (only
// when not inside a word), normalized (matched after the normalizer; with the empty normalizer deepmoe accepts
// this only changes the matching order: non-normalized tokens are found first).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace deepmoe {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = true;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  // One segment of the text: either an added token (id >= 0) covering [begin, end) or plain text (id = -1).
  struct Segment {
    size_t begin, end;
    int32_t id;
  };
  // Splits text into segments covering all of it. With parse_special = false special tokens are not matched
  // (they stay plain text); non-special added tokens still are, like HF's encode_special_tokens.
  void split(std::string_view text, bool parse_special, std::vector<Segment>& out) const;

  bool empty() const { return tokens_.empty(); }

 private:
  // A byte trie for leftmost-longest matching.
  struct Node {
    int32_t first_child = -1, next_sibling = -1;
    int32_t token = -1;  // index into tokens_ of the token ending here
    uint8_t byte = 0;
  };
  void split_pass(std::string_view text, size_t begin, size_t end, bool normalized_pass, bool parse_special,
                  std::vector<Segment>& out) const;
  int32_t child(int32_t node, uint8_t byte) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

}  // namespace deepmoe
