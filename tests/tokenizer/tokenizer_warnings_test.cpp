// The tokenizer's warnings (core/warning.h): ids with no token, invalid UTF-8 replaced, a folder without
// tokenizer_config.json. Each is reported through the installed handler, once per process, and changes nothing
// about the result.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "core/warning.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace deepmoe {
namespace {

namespace fs = std::filesystem;

class TokenizerWarnings : public ::testing::Test {
 protected:
  void SetUp() override {
    reset_warnings();
    previous_ = set_warning_handler([this](std::string_view m) { messages_.emplace_back(m); });
  }
  void TearDown() override {
    set_warning_handler(previous_);
    reset_warnings();
  }
  std::vector<std::string> messages_;
  WarningHandler previous_;
};

TEST_F(TokenizerWarnings, IdWithoutTokenWarnsOnceAndDecodesToNothing) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  const int32_t past_end = tok.vocab_size() + 100;  // V3: the model's padded rows 128815..129279
  const std::vector<int32_t> ids = {19923, past_end};
  EXPECT_EQ(tok.decode(ids), "Hello");
  EXPECT_EQ(tok.decode(ids), "Hello");
  StreamingDetokenizer stream(tok);
  EXPECT_EQ(stream.push(past_end), "");
  ASSERT_EQ(messages_.size(), 1u);
  EXPECT_NE(messages_[0].find("token id " + std::to_string(past_end)), std::string::npos) << messages_[0];
  EXPECT_NE(messages_[0].find("0.." + std::to_string(tok.vocab_size() - 1)), std::string::npos) << messages_[0];
  // Valid ids never warn.
  messages_.clear();
  reset_warnings();
  EXPECT_EQ(tok.decode(std::vector<int32_t>{19923, 2058}), "Hello world");
  EXPECT_TRUE(messages_.empty());
}

TEST_F(TokenizerWarnings, InvalidUtf8WarnsOnceAndIsReplaced) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  EXPECT_TRUE(messages_.empty());
  const auto valid = tok.encode("a b", false);
  EXPECT_TRUE(messages_.empty());
  const auto replaced = tok.encode("a\xff b\xc3", false);
  EXPECT_EQ(replaced, tok.encode("a\xEF\xBF\xBD b\xEF\xBF\xBD", false));
  tok.encode("\xfe", false);
  ASSERT_EQ(messages_.size(), 1u);
  EXPECT_NE(messages_[0].find("not valid UTF-8"), std::string::npos) << messages_[0];
}

TEST_F(TokenizerWarnings, MissingTokenizerConfigWarnsThatNoBosIsAdded) {
  const fs::path dir = fs::temp_directory_path() / ("deepmoe_tok_warn_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(fs::path(test::tokenizer_dir()) / "tokenizer.json", dir / "tokenizer.json",
                fs::copy_options::overwrite_existing);
  const auto tok = Tokenizer::load(dir.string());
  Tokenizer::load(dir.string());
  fs::remove_all(dir);
  EXPECT_FALSE(tok->add_bos());  // what the warning is about
  ASSERT_EQ(messages_.size(), 1u);
  EXPECT_NE(messages_[0].find("no tokenizer_config.json in " + dir.string()), std::string::npos) << messages_[0];
  EXPECT_NE(messages_[0].find("no BOS token"), std::string::npos) << messages_[0];
  // With the config next to it: no warning.
  messages_.clear();
  Tokenizer::load(test::tokenizer_dir());
  EXPECT_TRUE(messages_.empty());
}

}  // namespace
}  // namespace deepmoe
