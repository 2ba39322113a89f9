// The BPE trainer: what it writes loads in the tokenizer every command uses, round-trips any text, and encodes
// the training text to exactly the token count the trainer's own merge simulation predicts (so the merges are
// written in the order, and with the spellings, the encoder applies them).
#include "tokenizer/bpe_trainer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {
namespace {

std::string training_text() {
  std::string t;
  const char* lines[] = {
      "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
      "All:\nSpeak, speak.\n\n",
      "First Citizen:\nYou are all resolved rather to die than to famish?\n\n",
      "MENENIUS:\nWhat work's, my countrymen, in hand? where go you\nWith bats and clubs? The matter? speak, I pray "
      "you.\n\n",
      "Numbers 12 345 6789 and symbols -- (parenthesis) [brackets] {braces}!\n",
      "Unicode: café naïve über 東京 こんにちは — done.\n"};
  for (int rep = 0; rep < 20; ++rep)
    for (const char* l : lines) t += l;
  return t;
}

TEST(BpeTrainer, WritesATokenizerThatLoadsAndRoundTrips) {
  const std::string text = training_text();
  BpeTrainerOptions opt;
  opt.vocab_size = 400;
  const TrainedBpe bpe = train_bpe(text, opt);
  EXPECT_EQ(bpe.vocab_size(), 400);
  EXPECT_EQ(bpe.merges.size(), 400u - 256u - opt.special_tokens.size());
  EXPECT_LT(bpe.tokens * 2, bpe.text_bytes);  // merges span most pieces: over 2 bytes per token

  const std::string dir = testing::TempDir() + "/bpe_trainer_test";
  write_bpe_tokenizer(bpe, "", dir);
  const auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->bos_id(), 0);
  EXPECT_EQ(tok->eos_id(), 1);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_TRUE(tok->is_special(0));

  // The encoder reproduces the trainer's segmentation of its own text, token for token in total.
  const std::vector<int32_t> ids = tok->encode(text, /*add_special=*/false);
  EXPECT_EQ(int64_t(ids.size()), bpe.tokens);
  EXPECT_EQ(tok->decode(ids), text);

  // Text never seen (other scripts, bytes of rare characters, special-token markers) round-trips too.
  for (const std::string s : {std::string("Zebra 🦓 quux ÆØÅ\r\n\t  x"), std::string("<｜User｜>hi<｜Assistant｜>")}) {
    const auto e = tok->encode(s, false);
    EXPECT_EQ(tok->decode(e), s);
  }
  const auto with_bos = tok->encode("speak", true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], 0);
  EXPECT_EQ(tok->token_to_id("<｜Assistant｜>"), 3);
}

TEST(BpeTrainer, TheMostFrequentPairIsMergedFirst) {
  // "ab" occurs 9 times, "cd" 3 times: the first merge is (a, b), the second (ab, ...) or (c, d).
  const TrainedBpe bpe = train_bpe("ab ab ab ab ab ab ab ab ab cd cd cd", {.vocab_size = 256 + 13 + 1,
                                                                         .min_pair_count = 2});
  ASSERT_EQ(bpe.merges.size(), 1u);
  EXPECT_EQ(bpe.merges[0].first, "a");
  EXPECT_EQ(bpe.merges[0].second, "b");
}

TEST(BpeTrainer, RejectsUnsuitableInput) {
  EXPECT_THROW(train_bpe("", {}), Error);
  try {
    train_bpe(std::string("text\0binary", 11), {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("NUL byte at byte offset 4"), std::string::npos) << e.what();
  }
  try {
    train_bpe("ok \xff\xfe", {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("invalid UTF-8 sequence at byte offset 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(train_bpe("some text", {.vocab_size = 100}), Error);
}

}  // namespace
}  // namespace deepmoe
