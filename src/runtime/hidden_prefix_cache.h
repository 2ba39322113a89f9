// The main model's last-layer hidden states of token prefixes, kept beside the KV prefix cache for speculative
// decoding with MTP: the module's position i reads the main model's hidden state h_i, which the KV cache does not
// hold, so a sequence that takes a prompt prefix from the KV prefix cache needs those states too to build its MTP
// cache. Stored per full block of block_tokens tokens under the KV pool's own block keys (a hash chain over the
// whole prefix, the block's tokens checked on lookup: no false hit), least recently used dropped first beyond a
// bound in tokens.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

namespace deepmoe {

class HiddenPrefixCache {
 public:
  HiddenPrefixCache(int64_t block_tokens, int64_t hidden_size, int64_t max_tokens);

  int64_t block_tokens() const { return block_tokens_; }
  int64_t stored_blocks() const;

  // The number of leading full blocks of `tokens` whose hidden states are stored (all of tokens.size() /
  // block_tokens at most), with their states appended to `hidden` ([blocks * block_tokens, hidden_size]).
  int64_t lookup(std::span<const int32_t> tokens, std::vector<float>& hidden);
  // Stores the full blocks of `tokens` from block `first_block` on, `hidden` holding the states of every token
  // ([tokens.size(), hidden_size], at least the full blocks).
  void publish(std::span<const int32_t> tokens, std::span<const float> hidden, int64_t first_block);

 private:
  struct Block {
    uint64_t parent_key = 0;
    std::vector<int32_t> tokens;
    std::vector<float> hidden;
    std::list<uint64_t>::iterator lru;
  };

  const int64_t block_tokens_, hidden_size_, max_blocks_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Block> blocks_;
  std::list<uint64_t> lru_;  // keys, least recently used first
};

}  // namespace deepmoe
