// `--speculative mtp` on the real `deepmoe` binary with the tiny model (which has an MTP layer): generate prints
// the same greedy tokens as without it and reports the drafts in its summary; with --parallel N completion i is
// what `--seed <seed + i>` prints alone with the same drafts; chat runs with it; a model without an MTP layer is a
// clear error.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "cli_test_util.h"

namespace deepmoe::cli_test {
namespace {

std::string generate_ids(const std::string& extra, CommandResult* result = nullptr) {
  const CommandResult r = deepmoe("generate -m " + quote(kModel) +
                                  " -p 'The capital of France is' -n 12 --temperature 0 --ignore-eos --output ids " +
                                  extra);
  EXPECT_EQ(r.code, 0) << r.err;
  if (result) *result = r;
  return r.out;
}

TEST(CliSpeculative, GenerateGivesTheSameGreedyTokens) {
  const std::string plain = generate_ids("");
  for (const char* k : {"1", "3"}) {
    CommandResult r;
    EXPECT_EQ(generate_ids(std::string("--speculative mtp --draft-tokens ") + k, &r), plain) << "K = " << k;
    EXPECT_NE(r.err.find("drafts accepted"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("tokens per step"), std::string::npos) << r.err;
  }
}

TEST(CliSpeculative, ParallelCompletionsEqualEachSeedAlone) {
  const std::string args = "generate -m " + quote(kModel) +
                           " -p 'Hello there' -n 14 --temperature 0.9 --top-k 50 --speculative mtp --draft-tokens 2";
  const CommandResult together = deepmoe(args + " --seed 21 --parallel 3 --output ids");
  ASSERT_EQ(together.code, 0) << together.err;
  EXPECT_NE(together.err.find("drafts accepted"), std::string::npos) << together.err;
  std::istringstream lines(together.out);
  std::vector<std::string> got;
  for (std::string line; std::getline(lines, line);) got.push_back(line);
  ASSERT_EQ(got.size(), 3u) << together.out;
  for (int i = 0; i < 3; ++i) {
    const CommandResult alone = deepmoe(args + " --seed " + std::to_string(21 + i) + " --output ids");
    ASSERT_EQ(alone.code, 0) << alone.err;
    EXPECT_EQ(got[size_t(i)] + "\n", alone.out) << "completion " << i;
  }
  // Greedy: every completion is the plain loop's.
  const std::string greedy = "generate -m " + quote(kModel) + " -p 'The capital of France is' -n 12 --temperature 0 "
                             "--ignore-eos --output ids";
  const CommandResult plain = deepmoe(greedy);
  const CommandResult batched = deepmoe(greedy + " --parallel 2 --speculative mtp --draft-tokens 3");
  ASSERT_EQ(plain.code, 0) << plain.err;
  ASSERT_EQ(batched.code, 0) << batched.err;
  EXPECT_EQ(batched.out, plain.out + plain.out);
}

// bench --concurrency with --speculative mtp: one serving_speculative line per concurrency, the speculative and
// plain runs' greedy outputs identical, the figures present.
TEST(CliSpeculative, BenchComparesTheSchedulerWithAndWithout) {
  const CommandResult r = deepmoe("bench " + quote(kModel) +
                                  " --prompt 8 --prefill-runs 1 --decode-steps 4 --batch 1 --threads 1 --concurrency 1,3 "
                                  "--serving-prompt 16 --speculative mtp --draft-tokens 2 --speculative-rounds 1");
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream lines(r.out);
  int found = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("\"case\":\"serving_speculative\"") == std::string::npos) continue;
    ++found;
    for (const char* key : {"\"draft_acceptance_rate\":", "\"accepted_tokens_per_step\":", "\"decode_speedup\":",
                            "\"throughput_speedup\":", "\"verify_over_decode_forward\":"})
      EXPECT_NE(line.find(key), std::string::npos) << key << " in " << line;
    EXPECT_NE(line.find("\"outputs_identical\":true"), std::string::npos) << line;
  }
  EXPECT_EQ(found, 2) << r.out;
}

TEST(CliSpeculative, ChatRunsWithIt) {
  const CommandResult r = deepmoe("chat -m " + quote(kModel) + " -n 6 --temperature 0 --stats --speculative mtp",
                                  "Hello\nAgain\n");
  ASSERT_EQ(r.code, 0) << r.err;
  size_t replies = 0;
  for (size_t at = 0; (at = r.err.find("drafts accepted", at)) != std::string::npos; ++at) ++replies;
  EXPECT_EQ(replies, 2u) << r.err;
}

TEST(CliSpeculative, BadValuesAndModelsWithoutMtpAreClearErrors) {
  const CommandResult bad = deepmoe("generate -m " + quote(kModel) + " -p x --speculative eagle");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("--speculative"), std::string::npos) << bad.err;
  const CommandResult zero = deepmoe("generate -m " + quote(kModel) + " -p x --speculative mtp --draft-tokens 0");
  EXPECT_NE(zero.code, 0);
  EXPECT_NE(zero.err.find("--draft-tokens"), std::string::npos) << zero.err;

  const fs::path dir = fs::temp_directory_path() / ("deepmoe_spec_nomtp_" + std::to_string(::getpid()));
  const CommandResult made = deepmoe("gen-model --preset tiny --no-mtp --out " + quote(dir.string()));
  ASSERT_EQ(made.code, 0) << made.err;
  const CommandResult r = deepmoe("generate -m " + quote(dir.string()) + " -p x -n 2 --speculative mtp");
  fs::remove_all(dir);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("MTP"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace deepmoe::cli_test
