// Byte-level BPE (Sennrich et al. 2016; GPT-2's byte alphabet; HF tokenizers/src/models/bpe/word.rs): a piece
// starts as one token per byte, then the adjacent pair with the lowest merge rank is merged — leftmost first on
// ties — until no pair has a merge. The merge table is an open-addressing hash keyed by the pair of token ids;
// results for short pieces are cached (most words of a text repeat), in shards so threads rarely contend.
#pragma once

#include <cstdint>
#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/token_index.h"

namespace deepmoe {

class BpeModel {
 public:
  struct Merge {
    int32_t left, right, merged;
  };

  // vocab: token spelling (byte-level alphabet) -> id (kept only when ignore_merges needs it); merges in rank
  // order, already resolved to ids. Throws Error when a byte has no single-byte token.
  BpeModel(const TokenIndex& vocab, const std::vector<Merge>& merges, bool ignore_merges);

  // Appends the ids of one pre-tokenized piece (raw bytes, non-empty).
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  // With ignore_merges: id of the vocabulary token that spells exactly these raw bytes, or -1.
  int32_t token_id(std::string_view bytes) const;

  // Plain-loop reference merge (O(n^2), rescans every pair each step); the specification of encode_piece.
  void encode_piece_ref(std::string_view piece, std::vector<int32_t>& out) const;

 private:
  struct Slot {
    uint64_t key = kEmpty;
    int32_t rank = 0, merged = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Slot* find_merge(int32_t a, int32_t b) const;
  void merge_small(std::vector<int32_t>& symbols) const;
  void merge_large(std::vector<int32_t>& symbols) const;

  // Results for short pieces: a direct-mapped table of one-cache-line entries shared by all threads, each
  // guarded by a sequence lock (readers never block; a torn read is detected and treated as a miss).
  static constexpr size_t kCachedPieceBytes = 24;
  static constexpr size_t kCachedIds = 6;
  static constexpr size_t kCacheEntries = size_t{1} << 15;
  struct alignas(64) CacheEntry {
    std::atomic<uint64_t> seq{0};          // odd while being written
    std::atomic<uint64_t> key[3];          // piece bytes, zero-padded
    std::atomic<uint64_t> meta{0};         // piece length | id count << 8 (0 = empty)
    std::atomic<uint64_t> ids[3];          // up to 6 ids
  };
  bool cache_lookup(const uint64_t key[3], size_t len, size_t slot, std::vector<int32_t>& out) const;
  void cache_store(const uint64_t key[3], size_t len, size_t slot, const int32_t* ids, size_t n) const;
  void merge_piece(std::string_view piece, std::vector<int32_t>& out) const;

  std::unique_ptr<CacheEntry[]> cache_;
  int32_t byte_token_[256];
  std::vector<Slot> table_;
  uint64_t table_mask_ = 0;
  TokenIndex vocab_;
  bool ignore_merges_;
};

}  // namespace deepmoe
