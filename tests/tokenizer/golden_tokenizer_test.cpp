// Exactness against HF tokenizers: every case of the golden file (3,000 texts encoded by the real DeepSeek-V3
// tokenizer with add_special_tokens=False) must give the same ids, and decode back to the text.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "core/thread_pool.h"
#include "tokenizer_test_util.h"

namespace deepmoe {
namespace {

struct GoldenCase {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<GoldenCase> read_golden() {
  std::ifstream in(test::golden_dir() + "/tokenizer_deepseek_v3.jsonl");
  std::vector<GoldenCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    cases.push_back({j["text"].get<std::string>(), j["ids"].get<std::vector<int32_t>>()});
  }
  return cases;
}

TEST(GoldenTokenizer, AllCasesEncodeExactly) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  auto cases = read_golden();
  ASSERT_EQ(cases.size(), 3000u);
  size_t passed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    auto ids = tok.encode(cases[i].text, /*add_special=*/false, /*parse_special=*/true);
    if (ids == cases[i].ids) {
      ++passed;
    } else if (passed + 20 > i) {
      ADD_FAILURE() << "case " << i << " differs: " << nlohmann::json(cases[i].text).dump();
    }
  }
  EXPECT_EQ(passed, cases.size());
}

TEST(GoldenTokenizer, AllCasesDecodeToTheirText) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  for (const auto& c : read_golden()) ASSERT_EQ(tok.decode(c.ids), c.text);
}

TEST(GoldenTokenizer, BatchEncodeMatchesSerial) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  auto cases = read_golden();
  std::vector<std::string> texts;
  for (const auto& c : cases) texts.push_back(c.text);
  ThreadPool pool(3);
  auto batch = tok.encode_batch(texts, false, true, &pool);
  ASSERT_EQ(batch.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) ASSERT_EQ(batch[i], cases[i].ids) << i;
}

}  // namespace
}  // namespace deepmoe
