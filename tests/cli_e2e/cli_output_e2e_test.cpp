// What the `deepmoe` commands write and read, seen as a user sees it: a failed write (a full disk: /dev/full) is
// an error with the OS's reason, a folder given where a file belongs is named as such, gen-model says what it
// will write and protects other folders, and a model of random weights says so once.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "cli_test_util.h"

namespace deepmoe {
namespace {

using namespace cli_test;

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

TEST(CliOutput, WritesIntoAFullDiskFail) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string eplb_input = std::string(DEEPMOE_TEST_DATA_DIR) + "/eplb/readme_example.json";
  for (const std::string args : {"generate -m " + quote(kModel) + " -p hi -n 3 --temperature 0",
                                 "generate -m " + quote(kModel) + " -p hi -n 3 --temperature 0 --output json",
                                 "generate -m " + quote(kModel) + " -p hi -n 3 --temperature 0 --output ids",
                                 "eplb " + quote(eplb_input), "inspect " + quote(kModel),
                                 "inspect --json " + quote(kModel)}) {
    // The inner shell's redirection wins over run_shell's capture of stdout.
    const CommandResult r = run_shell("sh -c " + quote(deepmoe_bin() + " " + args + " > /dev/full"));
    EXPECT_EQ(r.code, 1) << args << ": " << r.err;
    EXPECT_NE(r.err.find("deepmoe: error: cannot write to standard output: No space left on device"),
              std::string::npos)
        << args << ": " << r.err;
  }
}

TEST(CliOutput, FolderWhereAFileBelongsIsNamed) {
  const fs::path dir = scratch_dir();
  const CommandResult r = deepmoe("perplexity -m " + quote(kModel) + " -f " + quote(dir.string()));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(dir.string() + ": is a directory, not a file"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("9223372036854775807"), std::string::npos) << r.err;
  const CommandResult eplb = deepmoe("eplb " + quote(dir.string()));
  EXPECT_EQ(eplb.code, 1);
  EXPECT_NE(eplb.err.find("is a directory"), std::string::npos) << eplb.err;
  // grammar's input files too (a folder used to read as an empty grammar or an empty check list).
  for (const std::string flags : {"--schema", "--gbnf", "--json --check"}) {
    const CommandResult g = deepmoe("grammar -m " + quote(kModel) + " " + flags + " " + quote(dir.string()));
    EXPECT_EQ(g.code, 1) << flags;
    EXPECT_NE(g.err.find(dir.string() + ": is a directory, not a file"), std::string::npos) << flags << ": " << g.err;
    EXPECT_EQ(g.out, "") << flags;
  }
  fs::remove_all(dir);
}

// A generated model carries a marker; loading it warns once (stderr), inspect shows it, and the warning does not
// touch stdout.
TEST(CliOutput, RandomWeightsAreAnnouncedOnce) {
  const CommandResult r = deepmoe("generate -m " + quote(kModel) + " -p hi -n 3 --temperature 0 --output ids");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count(r.err, "holds random weights"), 1u) << r.err;
  EXPECT_EQ(count(r.out, "random"), 0u);
  const CommandResult inspect = deepmoe("inspect --json " + quote(kModel));
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_EQ(nlohmann::json::parse(inspect.out)["random_weights"], true);
}

TEST(CliOutput, GenModelSaysTheSizeFirstAndProtectsOtherFolders) {
  const fs::path dir = scratch_dir();
  const std::string out = (dir / "m").string();
  // Small (no MTP module, which holds its own copies of the embedding and head) and sharded, so "N safetensors
  // file(s)" is more than one.
  const std::string gen = "gen-model --preset tiny --layers 1 --no-mtp --max-shard-gb 0.01 --out " + quote(out);
  CommandResult r = deepmoe(gen);
  ASSERT_EQ(r.code, 0) << r.err;
  const CommandResult inspect = deepmoe("inspect --json " + quote(out));
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  const nlohmann::json j = nlohmann::json::parse(inspect.out);
  // The size announced before writing is what inspect finds in the files afterwards.
  char expected[96];
  std::snprintf(expected, sizeof expected, "gen-model: writing %.3f GB of random weights to ",
                double(j["total_bytes"].get<uint64_t>()) / 1e9);
  EXPECT_TRUE(r.err.starts_with(std::string(expected) + out + "\n")) << r.err;
  EXPECT_GT(j["files"].get<size_t>(), 1u);
  EXPECT_NE(r.out.find(" in " + std::to_string(j["files"].get<size_t>()) + " safetensors file(s)"), std::string::npos)
      << r.out;
  // No progress bar off a terminal.
  EXPECT_EQ(r.err.find('\r'), std::string::npos);

  // The same model again: allowed. A different one: refused without --force, the folder untouched.
  r = deepmoe(gen + " --quiet");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const std::string config_before = read_file(fs::path(out) / "config.json");
  r = deepmoe("gen-model --preset tiny --layers 2 --no-mtp --out " + quote(out));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(out + ": already holds a different model"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(fs::path(out) / "config.json"), config_before);
  r = deepmoe("gen-model --preset tiny --layers 2 --no-mtp --force --out " + quote(out));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(read_file(fs::path(out) / "config.json"), config_before);

  // A folder with other files and no model: refused too.
  const fs::path other = dir / "notes";
  fs::create_directories(other);
  std::ofstream(other / "todo.txt") << "keep me\n";
  r = deepmoe("gen-model --preset tiny --out " + quote(other.string()));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(other.string() + ": is not empty"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(other / "config.json"));
  fs::remove_all(dir);
}

TEST(CliOutput, InspectUsesTheDefaultModel) {
  const CommandResult r = run_shell("DEEPMOE_MODEL=" + quote(kModel) + " " + deepmoe_bin() + " inspect --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["dir"], kModel);
  const CommandResult missing = run_shell("DEEPMOE_MODEL=/nonexistent/default " + deepmoe_bin() + " inspect");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("make demo"), std::string::npos) << missing.err;
}

// The tokenizer's warnings reach the user of the binary once each, on stderr, and leave stdout alone: invalid
// UTF-8 in a prompt file (replaced), a model folder without tokenizer_config.json (no BOS), a generated id past
// the tokenizer's last entry (no text).
TEST(CliOutput, TokenizerWarningsOnceOnStderr) {
  const fs::path dir = scratch_dir();
  std::ofstream(dir / "latin1.txt", std::ios::binary) << "caf\xe9 au lait, cr\xe8me";
  const CommandResult utf8 = deepmoe("generate -m " + quote(kModel) + " -f " +
                                     quote((dir / "latin1.txt").string()) + " -n 2 --output ids");
  ASSERT_EQ(utf8.code, 0) << utf8.err;
  EXPECT_EQ(count(utf8.err, "deepmoe: warning: the text to encode is not valid UTF-8"), 1u) << utf8.err;

  const fs::path no_config = dir / "model";
  fs::create_directories(no_config);
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.json"})
    fs::create_symlink(fs::path(kModel) / name, no_config / name);
  const CommandResult bos = deepmoe("generate -m " + quote(no_config.string()) + " -p hi -n 2 --output ids");
  ASSERT_EQ(bos.code, 0) << bos.err;
  EXPECT_EQ(count(bos.err, "deepmoe: warning: no tokenizer_config.json in " + no_config.string() +
                               ": no BOS token is added"),
            1u)
      << bos.err;

  // The tiny model has 129280 rows and 128815 tokens, as DeepSeek-V3: near-uniform sampling (temperature 100)
  // draws a padding id within a few hundred tokens; seed 5 does at the 11th.
  const CommandResult pad = deepmoe("generate -m " + quote(kModel) +
                                    " -p hi -n 300 --temperature 100 --seed 5 --ignore-eos --output json");
  ASSERT_EQ(pad.code, 0) << pad.err;
  size_t padding_ids = 0;
  std::istringstream lines(pad.out);
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j["token"].get<int>() < 128815) continue;
    ++padding_ids;
    EXPECT_EQ(j["text"], "") << line;
    EXPECT_TRUE(j["bytes"].empty()) << line;
  }
  if (padding_ids == 0) GTEST_SKIP() << "no padding id sampled in 300 tokens (the model's numbers changed)";
  EXPECT_EQ(count(pad.err, "deepmoe: warning: token id "), 1u) << pad.err;
  EXPECT_NE(pad.err.find("has no entry in the tokenizer (its ids are 0..128814); such ids decode to no text"),
            std::string::npos)
      << pad.err;
  EXPECT_EQ(count(pad.out, "warning"), 0u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace deepmoe
