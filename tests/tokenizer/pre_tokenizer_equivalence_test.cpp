// The hand-written DeepSeek-V3 pre-tokenizer must cut every text exactly where the three PCRE2 Split regexes
// do: checked piece for piece on the golden texts and on random strings over an alphabet chosen to hit every
// alternative's edge (whitespace runs before CR/LF, punctuation before letters, marks, digits, CJK, kana
// punctuation, unassigned code points).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <random>

#include "tokenizer/deepseek_v3_pre_tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace deepmoe {
namespace {

std::unique_ptr<SequencePreTokenizer> regex_path() {
  std::vector<std::unique_ptr<PreTokenizerStep>> steps;
  for (const char* p : DeepSeekV3PreTokenizer::kPatterns)
    steps.push_back(std::make_unique<SplitStep>(p, false, SplitBehavior::kIsolated, false));
  return std::make_unique<SequencePreTokenizer>(std::move(steps));
}

std::vector<std::string> pieces(const PreTokenizer& pre, const std::string& text) {
  std::vector<Span> spans;
  pre.split(text, spans);
  std::vector<std::string> out;
  for (Span s : spans) out.push_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

TEST(PreTokenizerEquivalence, RecognizesTheDeepSeekV3Sequence) {
  std::vector<std::unique_ptr<PreTokenizerStep>> steps;
  for (const char* p : DeepSeekV3PreTokenizer::kPatterns)
    steps.push_back(std::make_unique<SplitStep>(p, false, SplitBehavior::kIsolated, false));
  EXPECT_TRUE(DeepSeekV3PreTokenizer::matches(steps));
  steps.pop_back();
  EXPECT_FALSE(DeepSeekV3PreTokenizer::matches(steps));
  steps.push_back(std::make_unique<SplitStep>(DeepSeekV3PreTokenizer::kPatterns[2], false,
                                              SplitBehavior::kRemoved, false));
  EXPECT_FALSE(DeepSeekV3PreTokenizer::matches(steps));
}

TEST(PreTokenizerEquivalence, GoldenTexts) {
  auto regex = regex_path();
  DeepSeekV3PreTokenizer fast;
  std::ifstream in(test::golden_dir() + "/tokenizer_deepseek_v3.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    std::string text = nlohmann::json::parse(line)["text"].get<std::string>();
    ASSERT_EQ(pieces(fast, text), pieces(*regex, text)) << nlohmann::json(text).dump();
    ++n;
  }
  EXPECT_EQ(n, 3000);
}

TEST(PreTokenizerEquivalence, RandomStrings) {
  auto regex = regex_path();
  DeepSeekV3PreTokenizer fast;
  const std::vector<uint32_t> alphabet = {
      'a', 'Z', 'q', ' ', ' ', '\t', '\n', '\r', '\v', '\f', '.', ',', '!', '"', '\'', '-', '_', '`', '~', '$', '+',
      '<', '>', '0', '7', 0x00, 0x01, 0x7F, 0x85, 0xA0, 0xAD, 0xB2, 0xBD, 0xE9, 0x0301, 0x0308, 0x0663, 0x0E3F,
      0x1680, 0x180E, 0x2000, 0x200B, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0x2160, 0x2014, 0x201C, 0x20AC,
      0x2603, 0x3001, 0x3002, 0x3007, 0x3040, 0x3042, 0x3099, 0x309B, 0x30A0, 0x30A2, 0x30FB, 0x30FC, 0x4E00,
      0x4F60, 0x9FA5, 0x9FA6, 0xAC00, 0xFF0C, 0xFF5C, 0xFFFD, 0xE000, 0x1F600, 0x1F3FB, 0x10FFFF, 0x0378};
  std::mt19937 rng(5);
  for (int iter = 0; iter < 20000; ++iter) {
    std::string text;
    size_t len = 1 + rng() % 24;
    for (size_t k = 0; k < len; ++k) utf8::append(text, alphabet[rng() % alphabet.size()]);
    ASSERT_EQ(pieces(fast, text), pieces(*regex, text)) << nlohmann::json(text).dump();
  }
  // Uniformly random scalar values, so every general category is met.
  for (int iter = 0; iter < 5000; ++iter) {
    std::string text;
    size_t len = 1 + rng() % 12;
    for (size_t k = 0; k < len; ++k) {
      uint32_t cp;
      do {
        cp = (rng() % 4 == 0) ? rng() % 0x110000 : rng() % 0x3100;
      } while (cp >= 0xD800 && cp <= 0xDFFF);
      utf8::append(text, cp);
      if (rng() % 3 == 0) text += " ";
    }
    ASSERT_EQ(pieces(fast, text), pieces(*regex, text)) << nlohmann::json(text).dump();
  }
}

}  // namespace
}  // namespace deepmoe
