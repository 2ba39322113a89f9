// The training loop end to end on a small generated text: the loss falls below the unigram entropy, an
// interrupted run resumed from its checkpoint ends bit-exactly where the uninterrupted run ends, the bias update
// keeps the expert load closer to even than γ = 0, unsuitable data files get clear errors, and fine-tuning only the
// MTP module toward the main model raises its greedy acceptance without changing a byte of the main model.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <random>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/safetensors.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"
#include "train/token_data.h"
#include "train/trainer.h"

namespace deepmoe {
namespace {

namespace fs = std::filesystem;

// A text with structure to learn: sentences from a small grammar.
std::string generated_text(size_t bytes) {
  const char* subjects[] = {"the king", "my lord", "the queen", "a soldier", "thy father", "the people"};
  const char* verbs[] = {"speaks", "commands", "weeps", "sleeps", "fights", "loves"};
  const char* objects[] = {"of war", "in the field", "for rome", "with honour", "to the crown", "at night"};
  std::mt19937 rng(42);
  std::string t;
  while (t.size() < bytes) {
    t += subjects[rng() % 6];
    t += ' ';
    t += verbs[rng() % 6];
    t += ' ';
    t += objects[rng() % 6];
    t += (rng() % 4 == 0) ? ".\n" : ", ";
  }
  return t;
}

struct Fixture {
  std::string root, data, tokenizer;
  explicit Fixture(const std::string& name) {
    root = testing::TempDir() + "/trainer_test_" + name;
    fs::remove_all(root);
    fs::create_directories(root);
    data = root + "/data.txt";
    std::ofstream(data) << generated_text(24000);
    tokenizer = root + "/tokenizer";
    BpeTrainerOptions bpe;
    bpe.vocab_size = 320;
    write_bpe_tokenizer(train_bpe(read_text_file(data), bpe), "", tokenizer);
  }
  TrainerOptions options(int64_t steps) const {
    TrainerOptions o;
    o.data_path = data;
    o.tokenizer_dir = tokenizer;
    o.model = train_preset("tiny");
    o.model.vocab_size = 320;
    o.steps = steps;
    o.batch = 4;
    o.seq_len = 24;
    o.warmup = 5;
    o.lr = 1e-2;
    o.eval_every = 0;
    o.eval_windows = 8;
    return o;
  }
};

RunControl control(const std::string& dir) {
  RunControl c;
  c.out_dir = dir;
  c.threads = 2;
  c.log = std::fopen("/dev/null", "w");
  return c;
}

TEST(Trainer, LossFallsBelowTheUnigramEntropyAndTheCheckpointHasEveryFile) {
  const Fixture f("learn");
  const TrainSummary s = train(f.options(60), control(f.root + "/run"));
  EXPECT_EQ(s.steps, 60);
  EXPECT_LT(s.val_loss, s.unigram_entropy - 0.3) << "unigram entropy " << s.unigram_entropy;
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                           "trainer_state.safetensors", "metrics.jsonl", "loss_curve.svg", "train_options.json"})
    EXPECT_TRUE(fs::exists(f.root + "/run/" + file)) << file;
}

TEST(Trainer, ResumeContinuesBitExactly) {
  const Fixture f("resume");
  TrainerOptions o = f.options(8);
  o.checkpoint_every = 0;
  train(o, control(f.root + "/straight"));
  RunControl first = control(f.root + "/interrupted");
  first.stop_after = 3;
  EXPECT_EQ(train(o, first).steps, 3);
  RunControl second = control(f.root + "/interrupted");
  second.resume = true;
  EXPECT_EQ(train(TrainerOptions{}, second).steps, 8);  // options come from the saved state
  EXPECT_TRUE(read_text_file(f.root + "/straight/model.safetensors", size_t(1) << 30) ==
              read_text_file(f.root + "/interrupted/model.safetensors", size_t(1) << 30));
  // Master weights and both AdamW moments, bit for bit (the metadata names each run's own folder).
  const auto a = SafetensorsFile::open(f.root + "/straight/trainer_state.safetensors");
  const auto b = SafetensorsFile::open(f.root + "/interrupted/trainer_state.safetensors");
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const auto& info : a->tensors()) {
    const Tensor ta = a->tensor(info), tb = b->tensor(info.name);
    ASSERT_EQ(ta.nbytes(), tb.nbytes()) << info.name;
    EXPECT_EQ(std::memcmp(ta.data<const void>(), tb.data<const void>(), ta.nbytes()), 0) << info.name;
  }
  EXPECT_EQ(a->metadata().at("step"), "8");
  EXPECT_EQ(a->metadata().at("rng"), b->metadata().at("rng"));
}

TEST(Trainer, BiasUpdateBalancesTheExperts) {
  const Fixture f("balance");
  TrainerOptions o = f.options(40);
  o.bias_gamma = 0.01;
  const double with_bias = train(o, control(f.root + "/gamma")).load_max_over_mean;
  o.bias_gamma = 0;
  const double without = train(o, control(f.root + "/nogamma")).load_max_over_mean;
  EXPECT_LT(with_bias, without);
}

// `train --init BASE --mtp-only --mtp-target main`, as cmd_train sets it up.
TrainerOptions mtp_fine_tune(const Fixture& f, const std::string& base, int64_t steps) {
  TrainerOptions o = f.options(steps);
  o.init_from = base;
  o.tokenizer_dir = base;
  o.model = load_model_config(base);
  o.mtp_only = true;
  o.mtp_target = MtpTarget::MainModel;
  o.warmup = 2;
  return o;
}

TEST(Trainer, MtpOnlyFineTuneLeavesTheMainModelByteIdenticalAndLearnsTheMainModelsTokens) {
  const Fixture f("mtp_only");
  const std::string base = f.root + "/base", tuned = f.root + "/tuned";
  const TrainSummary before = train(f.options(30), control(base));
  const TrainSummary after = train(mtp_fine_tune(f, base, 40), control(tuned));
  // Greedy drafts on the validation windows that equal the main model's token at the next position.
  EXPECT_GT(after.mtp_acceptance, before.mtp_acceptance + 0.05) << before.mtp_acceptance;
  EXPECT_EQ(read_text_file(base + "/config.json"), read_text_file(tuned + "/config.json"));
  const auto a = SafetensorsFile::open(base + "/model.safetensors");
  const auto b = SafetensorsFile::open(tuned + "/model.safetensors");
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  const ModelConfig c = load_model_config(base);
  const std::string mtp = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  int same = 0, changed = 0;
  for (const auto& info : a->tensors()) {
    const Tensor ta = a->tensor(info), tb = b->tensor(info.name);
    ASSERT_EQ(ta.nbytes(), tb.nbytes()) << info.name;
    const bool equal = std::memcmp(ta.data<const void>(), tb.data<const void>(), ta.nbytes()) == 0;
    // The MTP layer's stored copies of the embedding and head are the shared, frozen tensors.
    const bool own = info.name.rfind(mtp, 0) == 0 && info.name.find("embed_tokens") == std::string::npos &&
                     info.name.find("shared_head.head") == std::string::npos;
    if (!own) {
      EXPECT_TRUE(equal) << info.name;
      ++same;
    } else {
      changed += !equal;
    }
  }
  EXPECT_GT(same, 20);
  EXPECT_GT(changed, 10);
}

TEST(Trainer, MtpOnlyFineTuneResumesBitExactly) {
  const Fixture f("mtp_resume");
  const std::string base = f.root + "/base";
  train(f.options(6), control(base));
  const TrainerOptions o = mtp_fine_tune(f, base, 8);
  train(o, control(f.root + "/straight"));
  RunControl first = control(f.root + "/interrupted");
  first.stop_after = 3;
  EXPECT_EQ(train(o, first).steps, 3);
  RunControl second = control(f.root + "/interrupted");
  second.resume = true;
  EXPECT_EQ(train(TrainerOptions{}, second).steps, 8);
  EXPECT_TRUE(read_text_file(f.root + "/straight/model.safetensors", size_t(1) << 30) ==
              read_text_file(f.root + "/interrupted/model.safetensors", size_t(1) << 30));
  const auto a = SafetensorsFile::open(f.root + "/straight/trainer_state.safetensors");
  const auto b = SafetensorsFile::open(f.root + "/interrupted/trainer_state.safetensors");
  for (const auto& info : a->tensors()) {
    const Tensor ta = a->tensor(info), tb = b->tensor(info.name);
    ASSERT_EQ(ta.nbytes(), tb.nbytes()) << info.name;
    EXPECT_EQ(std::memcmp(ta.data<const void>(), tb.data<const void>(), ta.nbytes()), 0) << info.name;
  }
}

TEST(Trainer, MtpOnlyNeedsATrainedModelAndMainTargetNeedsMtpOnly) {
  const Fixture f("mtp_errors");
  TrainerOptions o = f.options(2);
  o.mtp_only = true;
  EXPECT_THROW(train(o, control(f.root + "/a")), Error);  // no --init
  o.mtp_only = false;
  o.mtp_target = MtpTarget::MainModel;
  EXPECT_THROW(train(o, control(f.root + "/b")), Error);
  EXPECT_THROW(parse_mtp_target("next"), Error);
}

TEST(Trainer, UnsuitableDataGetsAClearError) {
  const Fixture f("errors");
  const auto tok = Tokenizer::load(f.tokenizer);
  auto message = [&](const std::string& text, int64_t window) {
    try {
      TokenDataset::from_text(text, *tok, 0.1, window, "data.txt");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message("", 8).find("empty"), std::string::npos);
  EXPECT_NE(message(std::string("abc\0\x01\x02", 6), 8).find("NUL byte at byte offset 3"), std::string::npos);
  EXPECT_NE(message("ok\xc3\x28", 8).find("not UTF-8"), std::string::npos);
  EXPECT_NE(message("the king speaks", 64).find("too short"), std::string::npos);
  EXPECT_EQ(message(generated_text(4000), 16), "");
}

}  // namespace
}  // namespace deepmoe
