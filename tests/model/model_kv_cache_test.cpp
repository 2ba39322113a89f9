// The model over the paged KV cache: small blocks (so attention reads across many block boundaries) in a shared,
// bounded pool give bitwise the logits of private pools, through prefill, decode and rollback, in both attention
// forms and both cache dtypes; a request that shares a 1,000-token prefix with an earlier one takes ≥ 960 tokens
// from the prefix cache and gets bitwise the logits of a fresh run; a full pool is a clean error.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <vector>

#include "core/error.h"
#include "model/config.h"
#include "runtime/executor.h"
#include "tiny_checkpoint.h"

namespace deepmoe {
namespace {

using namespace testing_util;

std::string tiny_v3_dir() {
  static const std::string d = [] {
    const std::string dir = temp_dir("kv_cache") + "/v3";
    write_tiny_checkpoint(tiny_v3_config(), dir, WeightFormat::Fp8, 5);
    return dir;
  }();
  return d;
}

ExecutorOptions opts(AttentionMode mode, DType kv) {
  ExecutorOptions o;
  o.attention = mode;
  o.kv_dtype = kv;
  o.threads = 2;
  return o;
}

std::vector<int32_t> tokens(int64_t n, uint32_t seed, int64_t vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t x = seed;
  for (auto& v : t) v = int32_t((x = x * 1664525u + 1013904223u) >> 8) % int32_t(vocab);
  return t;
}

std::vector<float> last_logits(Executor& m, Sequence* s, std::vector<int32_t> toks) {
  const Tensor l = m.forward({SequenceInput::last(s, std::move(toks))});
  return std::vector<float>(l.data<const float>(), l.data<const float>() + l.numel());
}

// Prefill 21, decode 6, roll back 5 (into an earlier block), decode 4 again: each step's logits, with the caches in
// `pools` (blocks of 4 tokens) and in private pools, next to another sequence in the same batch.
TEST(ModelKvCache, PagedSharedPoolGivesBitwiseTheLogitsOfPrivatePools) {
  for (AttentionMode mode : {AttentionMode::Absorbed, AttentionMode::Naive})
    for (DType kv : {DType::F32, DType::BF16}) {
      auto model = Executor::load(tiny_v3_dir(), opts(mode, kv));
      const int64_t V = model->config().vocab_size;
      KvPools pools = model->create_kv_pools(uint64_t(1) << 24, 4);
      auto paged = model->create_sequence(pools), other = model->create_sequence(pools);
      auto plain = model->create_sequence();
      const auto prompt = tokens(21, 1, V), other_prompt = tokens(9, 2, V);
      auto run = [&](std::vector<int32_t> toks) {
        const std::vector<int32_t> other_toks = other->length() == 0 ? other_prompt : std::vector<int32_t>{7};
        const Tensor both = model->forward({SequenceInput::last(other.get(), other_toks),
                                            SequenceInput::last(paged.get(), toks)});
        const float* p = both.data<const float>() + V;
        std::vector<float> got(p, p + V);
        EXPECT_EQ(got, last_logits(*model, plain.get(), toks)) << int(mode) << " " << dtype_name(kv);
      };
      run(prompt);
      for (int i = 0; i < 6; ++i) run({int32_t((i * 37) % V)});
      paged->main.truncate(paged->length() - 5);
      plain->main.truncate(plain->length() - 5);
      for (int i = 0; i < 4; ++i) run({int32_t((i * 91 + 3) % V)});
      EXPECT_GT(paged->main.held_blocks(), 5);
    }
}

TEST(ModelKvCache, SharedThousandTokenPrefixIsReusedWithBitwiseEqualLogits) {
  for (AttentionMode mode : {AttentionMode::Absorbed, AttentionMode::Naive}) {
    auto model = Executor::load(tiny_v3_dir(), opts(mode, DType::F32));
    const int64_t V = model->config().vocab_size;
    KvPools pools = model->create_kv_pools(uint64_t(256) << 20);
    const auto prefix = tokens(1000, 3, V);
    auto first_prompt = prefix, second_prompt = prefix;
    for (int32_t t : tokens(7, 4, V)) first_prompt.push_back(t);
    for (int32_t t : tokens(9, 5, V)) second_prompt.push_back(t);

    auto first = model->create_sequence(pools, first_prompt);
    EXPECT_EQ(first->cached_tokens(), 0);
    last_logits(*model, first.get(), first_prompt);

    auto second = model->create_sequence(pools, second_prompt);
    const int64_t cached = second->cached_tokens();
    std::printf("[%s] cached tokens of a 1,000-token shared prefix: %lld\n",
                mode == AttentionMode::Absorbed ? "absorbed" : "naive", (long long)cached);
    EXPECT_GE(cached, 960);
    EXPECT_EQ(second->length(), cached);
    auto reused = last_logits(*model, second.get(), std::vector<int32_t>(second_prompt.begin() + cached,
                                                                          second_prompt.end()));
    auto fresh_seq = model->create_sequence();
    EXPECT_EQ(reused, last_logits(*model, fresh_seq.get(), second_prompt));
    // Decoding on top of the shared blocks stays equal too.
    for (int i = 0; i < 3; ++i) {
      const std::vector<int32_t> next = {int32_t((i * 53 + 1) % V)};
      EXPECT_EQ(last_logits(*model, second.get(), next), last_logits(*model, fresh_seq.get(), next));
    }
    first.reset();
    second.reset();
    EXPECT_EQ(pools.main->used_blocks(), 0);
    EXPECT_GT(pools.main->cached_blocks(), 0);
  }
}

TEST(ModelKvCache, FullPoolIsACleanError) {
  auto model = Executor::load(tiny_v3_dir(), opts(AttentionMode::Absorbed, DType::F32));
  const int64_t V = model->config().vocab_size;
  const uint64_t block_bytes = uint64_t(model->config().num_hidden_layers) * 4 *
                               uint64_t(model->config().kv_lora_rank + model->config().qk_rope_head_dim) * 4;
  KvPools pools = model->create_kv_pools(3 * block_bytes * 2, 4);  // ≥ 3 blocks of 4 tokens for the main layers
  const int64_t blocks = pools.main->max_blocks();
  ASSERT_GE(blocks, 3);
  auto s = model->create_sequence(pools);
  EXPECT_FALSE(s->main.can_reserve(blocks * 4 + 1));
  EXPECT_THROW(last_logits(*model, s.get(), tokens(blocks * 4 + 1, 6, V)), Error);
  EXPECT_EQ(s->length(), 0);
  EXPECT_EQ(pools.main->used_blocks(), 0);
  // Within the budget it runs.
  EXPECT_EQ(last_logits(*model, s.get(), tokens(blocks * 4, 6, V)).size(), size_t(V));
  EXPECT_THROW(last_logits(*model, s.get(), {1}), Error);
}

}  // namespace
}  // namespace deepmoe
