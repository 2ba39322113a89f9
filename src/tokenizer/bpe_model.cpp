#include "tokenizer/bpe_model.h"

#include <limits>
#include <algorithm>
#include <cstring>
#include <functional>

#include "core/error.h"
#include "tokenizer/byte_level.h"

namespace deepmoe {
namespace {

inline uint64_t mix(uint64_t k) {
  // splitmix64 finalizer: pairs of small ids spread over the table.
  k ^= k >> 30;
  k *= 0xbf58476d1ce4e5b9ULL;
  k ^= k >> 27;
  k *= 0x94d049bb133111ebULL;
  k ^= k >> 31;
  return k;
}

constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();

// Short pieces use the rank-array scan (O(n^2) sequential work, no allocation); longer ones the heap, which is
// O(n log n) (a hostile megabyte-long word stays cheap) and measured faster from about this length on
// (tokenizer_bench, CJK runs).
constexpr size_t kSmallPiece = 48;

}  // namespace

BpeModel::BpeModel(const TokenIndex& vocab, const std::vector<Merge>& merges, bool ignore_merges)
    : cache_(new CacheEntry[kCacheEntries]), ignore_merges_(ignore_merges) {
  if (ignore_merges) vocab_ = vocab;
  for (int b = 0; b < 256; ++b) {
    byte_token_[b] = vocab.find(byte_level::encode(std::string(1, static_cast<char>(b))));
    if (byte_token_[b] < 0) {
      throw Error("BPE vocabulary has no token for byte " + std::to_string(b) +
                  " (a byte-level vocabulary needs all 256)");
    }
  }
  size_t capacity = 16;
  while (capacity < merges.size() * 2 + 16) capacity <<= 1;
  table_.assign(capacity, Slot{});
  table_mask_ = capacity - 1;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Merge& m = merges[rank];
    uint64_t key = pair_key(m.left, m.right);
    for (uint64_t h = mix(key) & table_mask_;; h = (h + 1) & table_mask_) {
      if (table_[h].key == kEmpty) {
        table_[h] = Slot{key, static_cast<int32_t>(rank), m.merged};
        break;
      }
      if (table_[h].key == key) break;  // a repeated merge keeps its first (lowest) rank, as HF does
    }
  }
}

const BpeModel::Slot* BpeModel::find_merge(int32_t a, int32_t b) const {
  uint64_t key = pair_key(a, b);
  for (uint64_t h = mix(key) & table_mask_;; h = (h + 1) & table_mask_) {
    const Slot& s = table_[h];
    if (s.key == key) return &s;
    if (s.key == kEmpty) return nullptr;
  }
}

int32_t BpeModel::token_id(std::string_view bytes) const {
  return vocab_.find(byte_level::encode(bytes));
}

void BpeModel::merge_small(std::vector<int32_t>& sym) const {
  // rank[i] = rank of the merge of (sym[i], sym[i+1]); after a merge only the two neighbouring pairs change.
  int32_t rank[kSmallPiece];
  int32_t merged[kSmallPiece];
  size_t n = sym.size();
  for (size_t i = 0; i + 1 < n; ++i) {
    const Slot* s = find_merge(sym[i], sym[i + 1]);
    rank[i] = s ? s->rank : kNoRank;
    merged[i] = s ? s->merged : -1;
  }
  while (n > 1) {
    size_t best = 0;
    int32_t best_rank = kNoRank;
    for (size_t i = 0; i + 1 < n; ++i) {
      if (rank[i] < best_rank) {
        best_rank = rank[i];
        best = i;
      }
    }
    if (best_rank == kNoRank) break;
    sym[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) {
      sym[i] = sym[i + 1];
      rank[i] = rank[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0) {
      const Slot* s = find_merge(sym[best - 1], sym[best]);
      rank[best - 1] = s ? s->rank : kNoRank;
      merged[best - 1] = s ? s->merged : -1;
    }
    if (best + 1 < n) {
      const Slot* s = find_merge(sym[best], sym[best + 1]);
      rank[best] = s ? s->rank : kNoRank;
      merged[best] = s ? s->merged : -1;
    }
  }
  sym.resize(n);
}

void BpeModel::merge_large(std::vector<int32_t>& sym) const {
  // Doubly linked list over the symbols + a min-heap of candidate merges ordered by (rank, position), as in
  // HF word.rs; stale heap entries are recognized by their position's version (below).
  size_t n = sym.size();
  thread_local std::vector<int32_t> prev, next;
  prev.resize(n);
  next.resize(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = (i + 1 < n) ? static_cast<int32_t>(i + 1) : -1;
  }
  // A candidate orders by (rank, position) — leftmost first on equal ranks — and carries the merge's result and
  // the version of its position's pair when pushed: a position's version changes whenever its pair does (and when
  // the position is merged away), so a stale candidate is recognized without another table lookup.
  struct Candidate {
    uint64_t key;  // rank << 32 | position
    int32_t merged;
    uint32_t version;
    bool operator>(const Candidate& o) const { return key > o.key; }
  };
  thread_local std::vector<uint32_t> version;
  version.assign(n, 0);
  thread_local std::vector<Candidate> heap;  // min-heap via std::greater
  heap.clear();
  auto push = [&](int32_t i) {
    if (i < 0 || next[i] < 0) return;
    if (const Slot* s = find_merge(sym[i], sym[next[i]])) {
      heap.push_back({uint64_t(uint32_t(s->rank)) << 32 | uint32_t(i), s->merged, version[i]});
      std::push_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    const Candidate c = heap.back();
    heap.pop_back();
    const int32_t i = int32_t(uint32_t(c.key));
    if (c.version != version[i]) continue;
    const int32_t j = next[i];
    sym[i] = c.merged;
    ++version[j];  // j is merged away: its candidates are stale
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    ++version[i];  // its pair is now (merged, the symbol after j)
    if (prev[i] >= 0) {
      ++version[prev[i]];  // its pair's right symbol changed
      push(prev[i]);
    }
    push(i);
  }
  size_t w = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) sym[w++] = sym[i];
  sym.resize(w);
}

void BpeModel::merge_piece(std::string_view piece, std::vector<int32_t>& out) const {
  thread_local std::vector<int32_t> sym;
  sym.resize(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) sym[i] = byte_token_[static_cast<uint8_t>(piece[i])];
  if (sym.size() <= kSmallPiece) {
    merge_small(sym);
  } else {
    merge_large(sym);
  }
  out.insert(out.end(), sym.begin(), sym.end());
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    out.push_back(byte_token_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  if (ignore_merges_) {
    int32_t id = token_id(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  if (piece.size() > kCachedPieceBytes) {
    merge_piece(piece, out);
    return;
  }
  uint64_t key[3] = {0, 0, 0};
  std::memcpy(key, piece.data(), piece.size());
  size_t slot = mix(key[0] ^ mix(key[1] ^ mix(key[2] ^ piece.size()))) & (kCacheEntries - 1);
  if (cache_lookup(key, piece.size(), slot, out)) return;
  size_t first = out.size();
  merge_piece(piece, out);
  if (out.size() - first <= kCachedIds) cache_store(key, piece.size(), slot, out.data() + first, out.size() - first);
}

bool BpeModel::cache_lookup(const uint64_t key[3], size_t len, size_t slot, std::vector<int32_t>& out) const {
  const CacheEntry& e = cache_[slot];
  uint64_t s1 = e.seq.load(std::memory_order_acquire);
  if (s1 & 1) return false;
  uint64_t meta = e.meta.load(std::memory_order_relaxed);
  uint64_t k0 = e.key[0].load(std::memory_order_relaxed), k1 = e.key[1].load(std::memory_order_relaxed),
           k2 = e.key[2].load(std::memory_order_relaxed);
  uint64_t w[3] = {e.ids[0].load(std::memory_order_relaxed), e.ids[1].load(std::memory_order_relaxed),
                   e.ids[2].load(std::memory_order_relaxed)};
  std::atomic_thread_fence(std::memory_order_acquire);
  if (e.seq.load(std::memory_order_relaxed) != s1) return false;
  if ((meta & 0xFF) != len || k0 != key[0] || k1 != key[1] || k2 != key[2]) return false;
  size_t n = (meta >> 8) & 0xFF;
  int32_t ids[kCachedIds];
  std::memcpy(ids, w, sizeof(ids));
  out.insert(out.end(), ids, ids + n);
  return true;
}

void BpeModel::cache_store(const uint64_t key[3], size_t len, size_t slot, const int32_t* ids, size_t n) const {
  CacheEntry& e = cache_[slot];
  uint64_t s = e.seq.load(std::memory_order_relaxed);
  if ((s & 1) || !e.seq.compare_exchange_strong(s, s + 1, std::memory_order_relaxed)) return;  // being written
  std::atomic_thread_fence(std::memory_order_release);
  uint64_t w[3] = {0, 0, 0};
  std::memcpy(w, ids, n * sizeof(int32_t));
  for (int i = 0; i < 3; ++i) {
    e.key[i].store(key[i], std::memory_order_relaxed);
    e.ids[i].store(w[i], std::memory_order_relaxed);
  }
  e.meta.store(len | (n << 8), std::memory_order_relaxed);
  e.seq.store(s + 2, std::memory_order_release);
}

void BpeModel::encode_piece_ref(std::string_view piece, std::vector<int32_t>& out) const {
  if (ignore_merges_ && piece.size() > 1 && token_id(piece) >= 0) {  // as encode_piece
    out.push_back(token_id(piece));
    return;
  }
  std::vector<int32_t> sym;
  for (char c : piece) sym.push_back(byte_token_[static_cast<uint8_t>(c)]);
  for (;;) {
    size_t best = 0;
    int32_t best_rank = kNoRank;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const Slot* s = find_merge(sym[i], sym[i + 1]);
      if (s && s->rank < best_rank) {
        best_rank = s->rank;
        best = i;
      }
    }
    if (best_rank == kNoRank) break;
    sym[best] = find_merge(sym[best], sym[best + 1])->merged;
    sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  out.insert(out.end(), sym.begin(), sym.end());
}

}  // namespace deepmoe
