// The paged KV cache and its block pool without a model: rows read back through the block table as written, growth
// without moving rows, truncation giving whole blocks back, a bounded pool refusing cleanly, the prefix cache's
// sharing / copy after truncation / LRU eviction, and every block coming back after any mix of sequences.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "core/error.h"
#include "model/kv_cache.h"

namespace deepmoe {
namespace {

KvLayout small_layout(DType dtype = DType::F32, int64_t block_tokens = 4) {
  return KvLayout{3, 5, 2, dtype, block_tokens};  // 3 layers, rows of 7 values
}

// Value j of row (layer, position t) of a test sequence: identifies it, exact in BF16.
float value(int64_t layer, int64_t t, int64_t j, float salt = 0) {
  return float(layer * 16 + t % 32) + float(j) * 0.5f + salt;
}

std::vector<float> rows_for(int64_t layer, int64_t first, int64_t n, int64_t row_elems, float salt = 0) {
  std::vector<float> v(size_t(n * row_elems));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < row_elems; ++j) v[size_t(t * row_elems + j)] = value(layer, first + t, j, salt);
  return v;
}

float read_back(const KvCache& c, int64_t layer, int64_t t, int64_t j) {
  const CacheRowView v = c.layer_view(layer);
  if (!v.bf16) return static_cast<const float*>(v.row_at(t))[j];
  return bf16_to_f32(static_cast<const uint16_t*>(v.row_at(t))[j]);
}

void fill(KvCache& c, int64_t n, const std::vector<int32_t>* tokens = nullptr, float salt = 0) {
  const int64_t first = c.length();
  c.reserve(first + n);
  for (int64_t l = 0; l < c.n_layers(); ++l) c.write(l, first, n, rows_for(l, first, n, c.row_elems(), salt).data());
  if (tokens)
    c.advance(std::span<const int32_t>(tokens->data() + first, size_t(n)));
  else
    c.advance(n);
}

void expect_rows(const KvCache& c, float salt = 0) {
  for (int64_t l = 0; l < c.n_layers(); ++l)
    for (int64_t t = 0; t < c.length(); ++t)
      for (int64_t j = 0; j < c.row_elems(); ++j)
        ASSERT_EQ(read_back(c, l, t, j), value(l, t, j, salt)) << l << " " << t << " " << j;
}

TEST(KvCache, RowsReadBackThroughTheBlockTableAndNeverMove) {
  for (DType dt : {DType::F32, DType::BF16}) {
    KvCache c(3, 5, 2, dt, 4);
    fill(c, 3);
    const void* first_block = c.layer_view(1).blocks[0];
    fill(c, 1);   // fills block 0 exactly
    fill(c, 11);  // three more blocks, one write spanning all of them
    EXPECT_EQ(c.length(), 15);
    EXPECT_EQ(c.held_blocks(), 4);
    EXPECT_EQ(c.layer_view(1).blocks[0], first_block) << "growth moved a block";
    expect_rows(c);
    EXPECT_EQ(c.bytes(), size_t(4 * 3 * 4 * 7 * dtype_size_bytes(dt)));
  }
}

TEST(KvCache, TruncateReturnsWholeBlocks) {
  auto pool = std::make_shared<KvBlockPool>(small_layout(), 10);
  KvCache c(pool);
  fill(c, 13);  // 4 blocks
  EXPECT_EQ(pool->used_blocks(), 4);
  c.truncate(9);  // positions 0..8: 3 blocks
  EXPECT_EQ(pool->used_blocks(), 3);
  c.truncate(8);
  EXPECT_EQ(pool->used_blocks(), 2);
  expect_rows(c);
  fill(c, 5);
  expect_rows(c);
  EXPECT_THROW(c.truncate(14), Error);
  c.truncate(0);
  EXPECT_EQ(pool->used_blocks(), 0);
  EXPECT_EQ(pool->free_blocks(), 4);
}

TEST(KvCache, FullPoolRefusesWithoutChangingAnything) {
  auto pool = std::make_shared<KvBlockPool>(small_layout(), 3);  // 12 tokens
  KvCache a(pool), b(pool);
  fill(a, 9);  // 3 blocks
  EXPECT_FALSE(pool->can_allocate(1));
  EXPECT_FALSE(b.can_reserve(1));
  EXPECT_FALSE(b.try_reserve(1));
  EXPECT_THROW(b.reserve(1), Error);
  EXPECT_EQ(b.held_blocks(), 0);
  EXPECT_TRUE(a.can_reserve(12));  // room left in a's last block
  EXPECT_FALSE(a.can_reserve(13));
  EXPECT_THROW(a.reserve(13), Error);
  EXPECT_EQ(a.held_blocks(), 3);
  expect_rows(a);
  EXPECT_EQ(pool->allocate(), kNoKvBlock);
  EXPECT_EQ(KvBlockPool::blocks_for_budget(small_layout(), 3 * small_layout().block_bytes() + 1), 3);
  EXPECT_THROW(KvBlockPool(KvLayout{1, 4, 2, DType::F16, 4}, 3), Error);
  EXPECT_THROW(KvBlockPool(KvLayout{1, 4, 2, DType::F32, 0}, 3), Error);
}

TEST(KvCache, PrefixBlocksAreSharedNotCopiedAndNeverWritten) {
  auto pool = std::make_shared<KvBlockPool>(small_layout(), 16);
  std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  KvCache a(pool);
  fill(a, 11, &prompt);  // blocks [5..8] and [9..12] full and published, [13..15] partial
  EXPECT_EQ(pool->used_blocks(), 3);

  KvCache b(pool);
  EXPECT_EQ(b.adopt_prefix(prompt), 8);
  EXPECT_EQ(b.cached_tokens(), 8);
  EXPECT_EQ(pool->used_blocks(), 3) << "adopted blocks are a's, not copies";
  EXPECT_EQ(b.layer_view(2).blocks[1], a.layer_view(2).blocks[1]);
  expect_rows(b);
  // At most prompt.size() − 1 tokens: a prompt of exactly two blocks keeps its last block to compute.
  KvCache c(pool);
  EXPECT_EQ(c.adopt_prefix(std::span<const int32_t>(prompt.data(), 8)), 4);
  // A different second block: only the first matches (the key chains over the parent).
  std::vector<int32_t> other = prompt;
  other[5] = 99;
  KvCache d(pool);
  EXPECT_EQ(d.adopt_prefix(other), 4);
  // A different first block: nothing, even though the second block's tokens match.
  other = prompt;
  other[0] = 99;
  KvCache e(pool);
  EXPECT_EQ(e.adopt_prefix(other), 0);

  // b appends into a fresh block; a's rows are untouched.
  const std::vector<int32_t> b_tokens = {5, 6, 7, 8, 9, 10, 11, 12, 40, 41};
  fill(b, 2, &b_tokens);
  EXPECT_EQ(pool->used_blocks(), 4);
  expect_rows(a);
  expect_rows(b);
  // b rolls back into the shared second block: the next append gets a private copy of its kept rows.
  b.truncate(6);
  EXPECT_EQ(pool->used_blocks(), 3);
  EXPECT_EQ(b.blocks_needed(7), 1);
  const std::vector<int32_t> b2 = {5, 6, 7, 8, 9, 10, 50, 51};
  fill(b, 2, &b2, 0.5f);  // positions 6, 7 with other values
  EXPECT_NE(b.layer_view(0).blocks[1], a.layer_view(0).blocks[1]);
  expect_rows(a);
  for (int64_t t = 0; t < 6; ++t) EXPECT_EQ(read_back(b, 0, t, 3), value(0, t, 3));
  EXPECT_EQ(read_back(b, 0, 7, 3), value(0, 7, 3, 0.5f));
}

TEST(KvCache, UnreferencedPrefixBlocksAreCachedThenEvictedLeastRecentlyUsedFirst) {
  auto pool = std::make_shared<KvBlockPool>(small_layout(), 4);
  std::vector<int32_t> p1 = {1, 2, 3, 4, 5, 6, 7, 8, 9}, p2 = {20, 21, 22, 23, 24};
  {
    KvCache a(pool);
    fill(a, 9, &p1);  // 3 blocks, 2 published
  }
  EXPECT_EQ(pool->used_blocks(), 0);
  EXPECT_EQ(pool->cached_blocks(), 2);
  EXPECT_EQ(pool->free_blocks(), int64_t(pool->allocated_bytes() / pool->layout().block_bytes()) - 2);
  EXPECT_EQ(pool->available_blocks(), 4);
  {
    KvCache b(pool);  // the cached prefix comes back after its owner ended
    EXPECT_EQ(b.adopt_prefix(p1), 8);
    expect_rows(b);
    EXPECT_EQ(pool->cached_blocks(), 0);
  }
  KvCache c(pool);
  fill(c, 12);  // 3 blocks: the free ones (and any never allocated), then the oldest cached (p1's second block)
  EXPECT_EQ(pool->cached_blocks(), 1);
  expect_rows(c);
  KvCache d(pool);
  EXPECT_EQ(d.adopt_prefix(p1), 4) << "the first block, released after the second, was kept";
  expect_rows(d);
  EXPECT_FALSE(c.try_reserve(13)) << "every block is held";
  EXPECT_EQ(pool->available_blocks(), 0);
  (void)p2;
}

// Sequences created, grown, truncated and dropped at random over one small pool, with prefixes that repeat: at the
// end no block is held, the cached ones all free up, and rows read back correctly throughout.
TEST(KvCache, EveryBlockReturnsAfterRandomSequences) {
  for (DType dt : {DType::F32, DType::BF16}) {
    auto pool = std::make_shared<KvBlockPool>(small_layout(dt, 3), 12);
    std::mt19937 rng(7);
    std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {1, 2, 3, 4, 5, 6, 9, 9, 9},
                                                 {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4}};
    struct Live {
      std::unique_ptr<KvCache> cache;
      std::vector<int32_t> prompt, tokens;
    };
    std::vector<Live> live;
    int64_t refused = 0, adopted = 0;
    for (int step = 0; step < 400; ++step) {
      const int op = int(rng() % 4);
      if (op == 0 || live.empty()) {  // new sequence, maybe from a cached prefix
        Live s{std::make_unique<KvCache>(pool), prompts[rng() % prompts.size()], {}};
        const int64_t got = s.cache->adopt_prefix(s.prompt);
        adopted += got;
        s.tokens.assign(s.prompt.begin(), s.prompt.begin() + got);
        live.push_back(std::move(s));
      } else if (op == 1) {  // grow by up to 7 tokens, continuing its prompt then random tokens
        Live& s = live[rng() % live.size()];
        const int64_t n = 1 + int64_t(rng() % 7), first = s.cache->length();
        if (!s.cache->try_reserve(first + n)) {
          ++refused;
          continue;
        }
        for (int64_t i = first; i < first + n; ++i)
          s.tokens.push_back(size_t(i) < s.prompt.size() ? s.prompt[size_t(i)] : int32_t(rng() % 3));
        for (int64_t l = 0; l < s.cache->n_layers(); ++l)
          s.cache->write(l, first, n, rows_for(l, first, n, s.cache->row_elems()).data());
        s.cache->advance(std::span<const int32_t>(s.tokens.data() + first, size_t(n)));
      } else if (op == 2) {  // roll back
        Live& s = live[rng() % live.size()];
        const int64_t n = int64_t(rng() % size_t(s.cache->length() + 1));
        s.cache->truncate(n);
        s.tokens.resize(size_t(n));
      } else {  // end (finished or abandoned midway)
        live.erase(live.begin() + int64_t(rng() % live.size()));
      }
      for (const Live& s : live) {
        ASSERT_EQ(s.cache->length(), int64_t(s.tokens.size()));
        expect_rows(*s.cache);
      }
    }
    EXPECT_GT(refused, 0) << "the pool never ran full: the test does not reach refusal";
    EXPECT_GT(adopted, 0) << "no prefix was ever reused";
    live.clear();
    EXPECT_EQ(pool->used_blocks(), 0);
    const int64_t allocated = int64_t(pool->allocated_bytes() / pool->layout().block_bytes());
    EXPECT_EQ(pool->free_blocks() + pool->cached_blocks(), allocated);
    pool->evict_cached();
    EXPECT_EQ(pool->free_blocks(), allocated);
    EXPECT_EQ(pool->available_blocks(), 12);
  }
}

}  // namespace
}  // namespace deepmoe
