// The vocabulary as the grammar layer sees it: each token id's byte spelling (empty: the token can never be
// produced under a grammar — special and padding ids) and the end-of-sequence id. The spellings are stored
// as a trie in depth-first order (one flat array; each node knows where its subtree ends), so a mask walk
// is a forward scan that skips whole subtrees when a prefix dies.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace deepmoe::grammar {

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

 private:
  void compute_plain_below();

  std::vector<std::string> spellings_;
  int32_t eos_id_;
  std::vector<Node> nodes_;
  std::vector<int32_t> token_ids_;
  std::vector<uint32_t> first_token_;
  std::vector<uint8_t> plain_below_;
  size_t max_depth_ = 0;
};

}  // namespace deepmoe::grammar
