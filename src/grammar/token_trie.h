// The vocabulary as the grammar layer sees it: each token id's byte spelling (empty: the token can never be
// produced under a grammar — special and padding ids) and the end-of-sequence id. The spellings are stored
// as a trie in depth-first order (one flat array; each node knows where its subtree ends), so a mask walk
// is a forward scan that skips whole subtrees when a prefix dies.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "grammar/token_table_cache.h"

namespace deepmoe::grammar {

// Characters by their lead byte, in the kinds a grammar's character classes tend to split them into: 0 ASCII
// other than letters and digits, 1 C2-DF, 2 E0, 3 E1-EC, 4 ED, 5 EE-EF, 6 F0, 7 F1-F3, 8 F4 (the UTF-8 shapes),
// 9 ASCII letters and digits (what URLs, e-mail addresses and identifiers are mostly made of); -1 for
// continuation and invalid bytes.
int utf8_lead_class(uint8_t b);
constexpr uint16_t kAsciiClasses = (1u << 0) | (1u << 9);

class TokenTrie {
 public:
  struct Node {
    uint32_t subtree_end;   // index one past this node's subtree
    uint32_t tokens_begin;  // this node's tokens (spelling ends here) in token_ids()
    uint32_t tokens_end;
    uint16_t depth;         // bytes from the root (root: 0)
    uint8_t byte;           // the byte leading here from the parent
  };

  // spellings[id] = the token's bytes; eos_id < 0: none.
  TokenTrie(std::vector<std::string> spellings, int32_t eos_id);

  int32_t vocab_size() const { return int32_t(spellings_.size()); }
  int32_t eos_id() const { return eos_id_; }
  const std::string& spelling(int32_t id) const { return spellings_[size_t(id)]; }
  const std::vector<Node>& nodes() const { return nodes_; }  // nodes()[0] is the root
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  size_t max_depth() const { return max_depth_; }
  // Tokens of node i's subtree: token_ids()[subtree_tokens_begin(i) .. subtree_tokens_begin(subtree_end)).
  uint32_t subtree_tokens_begin(uint32_t node) const {
    return node < first_token_.size() ? first_token_[node] : uint32_t(token_ids_.size());
  }
  // Every token below node i (its own byte included) continues with "plain" JSON string text from a
  // character boundary: bytes >= 0x20 other than '"' and '\', forming valid UTF-8 (possibly cut short at
  // the token's end). A grammar state that loops on every plain character accepts such subtrees whole.
  bool plain_text_below(uint32_t node) const { return plain_below_[node]; }
  // For a node with plain_text_below: the most characters (complete, or cut short at the token's end) that a
  // token below it spells from node i's byte on. A state from which any run of that many plain characters
  // survives accepts the whole subtree.
  uint32_t plain_chars_below(uint32_t node) const { return plain_chars_[node]; }
  // Which kinds of characters begin below a node with plain_text_below (bit k: lead bytes of class k, see
  // utf8_lead_class), so a state needs to be checked on those kinds only.
  uint16_t plain_classes_below(uint32_t node) const { return plain_classes_[node]; }
  // The same three facts about what follows node i's own byte (its children's subtrees): whether every token
  // below i continues after that byte with plain text from a character boundary, the most characters, and
  // their kinds. A walk that reaches node i alive in a state where such runs survive accepts all of i's
  // subtree without visiting the children (after a key's first letters, a prefix of a declared name, where the
  // next letter decides nothing for most tokens).
  bool plain_text_after(uint32_t node) const { return plain_after_[node]; }
  uint32_t plain_chars_after(uint32_t node) const { return plain_chars_after_[node]; }
  uint16_t plain_classes_after(uint32_t node) const { return plain_classes_after_[node]; }
  // Token tables over this vocabulary, shared by every masker that uses it (see token_table_cache.h).
  TokenTableCache& shared_tables() const { return *shared_tables_; }

 private:
  void compute_plain_below();

  std::vector<std::string> spellings_;
  int32_t eos_id_;
  std::vector<Node> nodes_;
  std::vector<int32_t> token_ids_;
  std::vector<uint32_t> first_token_;
  std::vector<uint8_t> plain_below_;
  std::vector<uint16_t> plain_chars_;
  std::vector<uint16_t> plain_classes_;
  std::vector<uint8_t> plain_after_;
  std::vector<uint16_t> plain_chars_after_;
  std::vector<uint16_t> plain_classes_after_;
  size_t max_depth_ = 0;
  std::shared_ptr<TokenTableCache> shared_tables_ = std::make_shared<TokenTableCache>();
};

}  // namespace deepmoe::grammar
