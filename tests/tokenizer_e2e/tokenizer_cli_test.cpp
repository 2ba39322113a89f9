// Drives the real `deepmoe tokenize` and `deepmoe template` binaries: golden round trips through --jsonl, the
// stdin mode, and exit codes / messages for missing files, malformed input and bad flags.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace {

namespace fs = std::filesystem;

const std::string kTool = std::string(DEEPMOE_BINARY_DIR) + "/tools/deepmoe";
const std::string kModel = std::string(DEEPMOE_TEST_DATA_DIR) + "/../../assets/tokenizer";
const std::string kGolden = std::string(DEEPMOE_TEST_DATA_DIR) + "/golden";

struct Result {
  int status;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("deepmoe_tok_e2e_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `deepmoe <args>` with stdin from `input`; returns exit status and both streams.
  Result run(const std::string& args, const std::string& input = "") {
    fs::path in = dir_ / "stdin", out = dir_ / "stdout", err = dir_ / "stderr";
    std::ofstream(in, std::ios::binary) << input;
    std::string cmd = "'" + kTool + "' " + args + " < '" + in.string() + "' > '" + out.string() + "' 2> '" +
                      err.string() + "'";
    int raw = std::system(cmd.c_str());
    return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, slurp(out), slurp(err)};
  }

  fs::path dir_;
};

std::vector<nlohmann::json> read_jsonl(const std::string& text) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

TEST_F(Cli, TokenizeJsonlReproducesTheGoldenIds) {
  auto golden = read_jsonl(slurp(kGolden + "/tokenizer_deepseek_v3.jsonl"));
  std::ofstream input(dir_ / "texts.jsonl", std::ios::binary);
  for (const auto& g : golden) input << nlohmann::json{{"text", g["text"]}}.dump() << "\n";
  input.close();
  Result r = run("tokenize -m '" + kModel + "' --jsonl '" + (dir_ / "texts.jsonl").string() + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  auto rows = read_jsonl(r.out);
  ASSERT_EQ(rows.size(), golden.size());
  size_t same = 0;
  for (size_t i = 0; i < rows.size(); ++i) same += rows[i]["ids"] == golden[i]["ids"];
  EXPECT_EQ(same, golden.size());
}

TEST_F(Cli, TemplateJsonlReproducesTheGoldenRendering) {
  std::string path = kGolden + "/chat_template_deepseek_v3.jsonl";
  Result r = run("template -m '" + kModel + "' --jsonl '" + path + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  auto golden = read_jsonl(slurp(path));
  auto rows = read_jsonl(r.out);
  ASSERT_EQ(rows.size(), golden.size());
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i]["rendered"], golden[i]["rendered"]) << i;
}

TEST_F(Cli, TokenizeStdinPrintsIdsAndText) {
  Result r = run("tokenize -m '" + kModel + "'", "Hello world!");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "19923\tHello\n2058\t world\n3\t!\n");
  EXPECT_EQ(r.err, "");
  Result bos = run("tokenize --add-special -m '" + kModel + "'", "Hello");
  EXPECT_EQ(bos.out, "0\t<｜begin▁of▁sentence｜>\n19923\tHello\n");
  // --pieces: tokenizer.json's byte-level spelling.
  Result pieces = run("tokenize --pieces -m '" + kModel + "'", "Hello world!");
  EXPECT_EQ(pieces.out, "19923\tHello\n2058\tĠworld\n3\t!\n");
}

// Undoes the text column's escapes (\\ \t \n \r \xNN).
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    const char c = s.at(++i);
    if (c == 'x') {
      out += char(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
    }
  }
  return out;
}

// The text column, unescaped and joined, is the input again: line breaks, tabs, backslashes, control bytes and
// characters split across tokens (CJK, emoji) included; each line is one id and one field.
TEST_F(Cli, TokenizeTextColumnRoundTrips) {
  const std::string text = "Line one\n\tindented \\path\r\n日本語のテキスト 🎉🎉 \x01 done";
  Result r = run("tokenize -m '" + kModel + "'", text);
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line, joined;
  size_t count = 0, escaped_hex = 0;
  while (std::getline(lines, line)) {
    const size_t tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos) << line;
    ASSERT_EQ(line.find('\t', tab + 1), std::string::npos) << line;
    std::stoi(line.substr(0, tab));
    escaped_hex += line.find("\\x") != std::string::npos;
    joined += unescape(line.substr(tab + 1));
    ++count;
  }
  EXPECT_EQ(joined, text);
  EXPECT_GT(count, 10u);
  EXPECT_GT(escaped_hex, 0u);  // the control byte, at least
}

// Writes that fail (a full disk) and inputs that are not files are errors with the OS's reason, not exit 0.
TEST_F(Cli, WriteErrorsAndFolderInputsFail) {
  auto to_dev_full = [&](const std::string& args, const std::string& input) {
    std::ofstream(dir_ / "stdin", std::ios::binary) << input;
    const std::string cmd = "'" + kTool + "' " + args + " < '" + (dir_ / "stdin").string() + "' > /dev/full 2> '" +
                            (dir_ / "stderr").string() + "'";
    const int raw = std::system(cmd.c_str());
    return Result{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, "", slurp(dir_ / "stderr")};
  };
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  for (const auto& [args, input] : std::vector<std::pair<std::string, std::string>>{
           {"tokenize -m '" + kModel + "'", "Hello world!"},
           {"tokenize -m '" + kModel + "' --jsonl '" + kGolden + "/tokenizer_deepseek_v3.jsonl'", ""},
           {"template -g -m '" + kModel + "'", R"([{"role":"user","content":"Hi"}])"},
           {"template -m '" + kModel + "' --jsonl '" + kGolden + "/chat_template_deepseek_v3.jsonl'", ""}}) {
    const Result r = to_dev_full(args, input);
    EXPECT_EQ(r.status, 1) << args;
    EXPECT_NE(r.err.find("cannot write to standard output: No space left on device"), std::string::npos)
        << args << ": " << r.err;
  }
  for (const char* command : {"tokenize", "template"}) {
    const Result r = run(std::string(command) + " -m '" + kModel + "' --jsonl '" + dir_.string() + "'");
    EXPECT_EQ(r.status, 1) << command;
    EXPECT_NE(r.err.find(dir_.string() + ": is a directory"), std::string::npos) << command << ": " << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(Cli, TokenizerWarningsGoToStderrOnce) {
  Result r = run("tokenize -m '" + kModel + "'", "a\xff b\xfe c");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "deepmoe: warning: the text to encode is not valid UTF-8; each invalid byte sequence was "
                   "replaced by U+FFFD\n");
  fs::create_directories(dir_ / "no_config");
  fs::copy_file(fs::path(kModel) / "tokenizer.json", dir_ / "no_config" / "tokenizer.json");
  Result bare = run("tokenize --add-special -m '" + (dir_ / "no_config").string() + "'", "Hello");
  ASSERT_EQ(bare.status, 0) << bare.err;
  EXPECT_EQ(bare.out, "19923\tHello\n");  // no BOS: what the warning says
  EXPECT_NE(bare.err.find("deepmoe: warning: no tokenizer_config.json in " + (dir_ / "no_config").string() +
                          ": no BOS token is added to prompts"),
            std::string::npos)
      << bare.err;
}

TEST_F(Cli, TemplateStdinRendersMessages) {
  Result r = run("template -g -m '" + kModel + "'", R"([{"role":"user","content":"Hi"}])");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>");
}

TEST_F(Cli, MissingModelFolderIsANamedError) {
  Result r = run("tokenize -m '" + (dir_ / "nowhere").string() + "'", "x");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("deepmoe: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no tokenizer.json"), std::string::npos) << r.err;
  Result t = run("template -m '" + (dir_ / "nowhere").string() + "'", "[]");
  EXPECT_EQ(t.status, 1);
  EXPECT_NE(t.err.find("no tokenizer_config.json"), std::string::npos) << t.err;
}

TEST_F(Cli, MissingAndMalformedJsonlAreNamedErrors) {
  Result missing = run("tokenize -m '" + kModel + "' --jsonl '" + (dir_ / "absent.jsonl").string() + "'");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("cannot open"), std::string::npos) << missing.err;

  std::ofstream(dir_ / "bad.jsonl") << "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
  Result bad = run("tokenize -m '" + kModel + "' --jsonl '" + (dir_ / "bad.jsonl").string() + "'");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("bad.jsonl:2: expected {\"text\""), std::string::npos) << bad.err;

  std::ofstream(dir_ / "bad_t.jsonl") << "{\"messages\": [{\"role\": \"user\"}]}\n";
  Result bad_t = run("template -m '" + kModel + "' --jsonl '" + (dir_ / "bad_t.jsonl").string() + "'");
  EXPECT_EQ(bad_t.status, 1);
  EXPECT_NE(bad_t.err.find("bad_t.jsonl:1: "), std::string::npos) << bad_t.err;
  EXPECT_NE(bad_t.err.find("missing content"), std::string::npos) << bad_t.err;
}

TEST_F(Cli, BadFlagsFailWithAParseMessage) {
  Result r = run("tokenize --no-such-flag");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.status, 1);  // parse errors are not runtime errors
  EXPECT_NE((r.out + r.err).find("--no-such-flag"), std::string::npos) << r.err;
  Result t = run("tokenize -t -3 -m '" + kModel + "'", "x");
  EXPECT_NE(t.status, 0);
  EXPECT_NE(t.status, 1);
}

TEST_F(Cli, HostileTokenizerJsonIsANamedError) {
  fs::create_directories(dir_ / "model");
  std::ofstream(dir_ / "model" / "tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
  Result r = run("tokenize -m '" + (dir_ / "model").string() + "'", "x");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("unsupported model \"Unigram\""), std::string::npos) << r.err;
}

}  // namespace
