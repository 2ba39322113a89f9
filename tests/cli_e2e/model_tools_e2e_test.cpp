// `deepmoe logits` and `deepmoe perplexity` through the real binary on the tiny checkpoint of the
// cli_e2e.make_tiny_model fixture. The independent side is the library's forward pass called in-process (batch
// invariance makes its logits bitwise those of the tool, whatever the thread count), and the NLL / perplexity
// written out here in double from those logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli_test_util.h"
#include "model/config.h"
#include "runtime/executor.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {
namespace {

using namespace cli_test;

const std::vector<int32_t> kIds = {0, 42, 7, 1000, 128000, 5};
const std::string kIdsArg = "0,42,7,1000,128000,5";

// The library's logits of `ids` from an empty cache, every position: [ids.size(), vocab].
std::vector<float> library_logits(const std::vector<int32_t>& ids, GemmMode gemm, int64_t* vocab) {
  ExecutorOptions o;
  o.gemm = gemm;
  o.threads = 2;
  auto model = Executor::load(kModel, o);
  auto seq = model->create_sequence();
  const Tensor t = model->forward({SequenceInput::all(seq.get(), ids)});
  *vocab = t.dim(1);
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

bool bitwise_equal(const std::vector<float>& a, const float* b, size_t n) {
  return a.size() == n && std::memcmp(a.data(), b, n * sizeof(float)) == 0;
}

TEST(CliLogits, JsonEqualsLibraryForwardEveryPosition) {
  const CommandResult r = deepmoe("logits -m " + quote(kModel) + " --ids " + kIdsArg + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(lines_of(r.out).size(), 1u);  // one request: one JSON document on one line
  const auto j = nlohmann::json::parse(r.out);
  int64_t vocab = 0;
  const std::vector<float> expected = library_logits(kIds, cli_default_gemm(), &vocab);
  EXPECT_EQ(j["request"], 0);
  EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), kIds);
  EXPECT_EQ(j["positions"].get<std::vector<int64_t>>(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(j["vocab_size"].get<int64_t>(), vocab);
  ASSERT_EQ(j["logits"].size(), kIds.size());
  for (size_t p = 0; p < kIds.size(); ++p) {
    // The JSON floats read back to the very same float32 values.
    const auto row = j["logits"][p].get<std::vector<float>>();
    EXPECT_TRUE(bitwise_equal(row, expected.data() + int64_t(p) * vocab, size_t(vocab))) << "position " << p;
  }
}

TEST(CliLogits, F32HeaderAndPayload) {
  const fs::path dir = scratch_dir();
  for (const std::string gemm : {"w8a32", "w8a8", "w8a16", "auto"}) {
    const std::string out = (dir / (gemm + ".f32")).string();
    const CommandResult r = deepmoe("logits -m " + quote(kModel) + " --ids " + kIdsArg +
                                    " --ids 9,8 --format f32 --gemm " + gemm + " --threads 1 --out " + quote(out));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "");
    const std::string f = read_file(out);
    int64_t vocab = 0;
    const GemmMode mode = gemm == "w8a8"    ? GemmMode::W8A8
                          : gemm == "w8a16" ? GemmMode::W8A16
                          : gemm == "auto"  ? cli_default_gemm()
                                            : GemmMode::W8A32;
    const std::vector<float> first = library_logits(kIds, mode, &vocab);
    const std::vector<float> second = library_logits({9, 8}, mode, &vocab);
    const size_t rows = kIds.size() + 2;
    ASSERT_EQ(f.size(), 24 + rows * 12 + rows * size_t(vocab) * 4) << gemm;
    EXPECT_EQ(f.substr(0, 8), "DMLOGITS");
    uint32_t head[4];
    std::memcpy(head, f.data() + 8, sizeof head);
    EXPECT_EQ(head[0], 1u);
    EXPECT_EQ(head[1], rows);
    EXPECT_EQ(int64_t(head[2]), vocab);
    EXPECT_EQ(head[3], 2u);
    std::vector<int32_t> meta(rows * 3);
    std::memcpy(meta.data(), f.data() + 24, meta.size() * 4);
    for (size_t i = 0; i < rows; ++i) {
      const bool in_first = i < kIds.size();
      EXPECT_EQ(meta[3 * i], in_first ? 0 : 1) << i;
      EXPECT_EQ(meta[3 * i + 1], int32_t(in_first ? i : i - kIds.size())) << i;
      EXPECT_EQ(meta[3 * i + 2], in_first ? kIds[i] : (i == kIds.size() ? 9 : 8)) << i;
    }
    const float* payload = reinterpret_cast<const float*>(f.data() + 24 + rows * 12);
    EXPECT_TRUE(bitwise_equal(first, payload, first.size())) << gemm;
    EXPECT_TRUE(bitwise_equal(second, payload + first.size(), second.size())) << gemm;
  }
  fs::remove_all(dir);
}

TEST(CliLogits, LastPositionIsTheLastRowOfAll) {
  const std::string base = "logits -m " + quote(kModel) + " --ids " + kIdsArg + " --ids 3,1,4,1,5";
  const CommandResult all = deepmoe(base + " --positions all");
  const CommandResult last = deepmoe(base + " --positions last");
  ASSERT_EQ(all.code, 0) << all.err;
  ASSERT_EQ(last.code, 0) << last.err;
  const auto all_lines = lines_of(all.out), last_lines = lines_of(last.out);
  ASSERT_EQ(all_lines.size(), 2u);  // JSON Lines: one object per request
  ASSERT_EQ(last_lines.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto a = nlohmann::json::parse(all_lines[i]), l = nlohmann::json::parse(last_lines[i]);
    EXPECT_EQ(a["request"], i);
    EXPECT_EQ(l["request"], i);
    const size_t n = a["ids"].size();
    EXPECT_EQ(l["positions"], nlohmann::json::array({n - 1}));
    ASSERT_EQ(l["logits"].size(), 1u);
    EXPECT_EQ(l["logits"][0], a["logits"][n - 1]) << "request " << i;
  }
}

// The digest format's hash and top entries recomputed from the library's logits.
TEST(CliLogits, DigestMatchesLibraryLogits) {
  const CommandResult r =
      deepmoe("logits -m " + quote(kModel) + " --ids 0,42,7 --format digest --top 3 --positions last");
  ASSERT_EQ(r.code, 0) << r.err;
  int64_t vocab = 0;
  const std::vector<float> logits = library_logits({0, 42, 7}, cli_default_gemm(), &vocab);
  const float* row = logits.data() + 2 * vocab;
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t i = 0; i < vocab; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &row[i], 4);
    for (int b = 0; b < 4; ++b) h = (h ^ ((bits >> (8 * b)) & 0xFF)) * 0x100000001b3ull;
  }
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (row[i] > row[best]) best = i;
  char hash[32];
  std::snprintf(hash, sizeof hash, "fnv1a64=%016llx", (unsigned long long)h);
  ASSERT_EQ(lines_of(r.out).size(), 1u) << r.out;
  EXPECT_EQ(r.out.rfind("request 0 position 2 token 7: ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find(hash), std::string::npos) << r.out << " expected " << hash;
  EXPECT_NE(r.out.find("top: " + std::to_string(best) + ":"), std::string::npos) << r.out;
}

TEST(CliLogits, BadIdsAndValues) {
  const std::string base = "logits -m " + quote(kModel) + " ";
  // Syntax errors are usage errors (exit 2) naming the bad item.
  for (const auto& [ids, expected] : std::vector<std::pair<std::string, std::string>>{
           {"1,x", "'x' is not a token id"}, {"''", "empty token id list"}, {"1,,2", "'' is not a token id"},
           {"=-3", "'-3'"}, {"1,2.5", "'2.5'"}, {"99999999999", "'99999999999'"}}) {
    const CommandResult r = deepmoe(base + "--ids" + (ids[0] == '=' ? "" : " ") + ids);
    EXPECT_EQ(r.code, 2) << ids << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << ids << ": " << r.err;
    EXPECT_EQ(r.out, "") << ids;
  }
  // Beyond the vocabulary: known only once the model is read (exit 1, names the id and the bound).
  const CommandResult oov = deepmoe(base + "--ids 1,129280");
  EXPECT_EQ(oov.code, 1) << oov.err;
  EXPECT_NE(oov.err.find("deepmoe: error:"), std::string::npos) << oov.err;
  EXPECT_NE(oov.err.find("token id 129280"), std::string::npos) << oov.err;
  EXPECT_NE(oov.err.find("[0, 129280)"), std::string::npos) << oov.err;
  // It names the flag typed, not the config field behind the bound.
  EXPECT_NE(oov.err.find("deepmoe: error: --ids: "), std::string::npos) << oov.err;
  EXPECT_EQ(oov.err.find("field"), std::string::npos) << oov.err;
  EXPECT_EQ(deepmoe(base).code, 2);  // --ids is required
  EXPECT_EQ(deepmoe(base + "--ids 1 --positions first").code, 2);
  EXPECT_EQ(deepmoe(base + "--ids 1 --format csv").code, 2);
  EXPECT_EQ(deepmoe(base + "--ids 1 --gemm fp4").code, 2);
  const CommandResult missing = deepmoe("logits -m /nonexistent/deepmoe-model --ids 1");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("/nonexistent/deepmoe-model"), std::string::npos) << missing.err;
  const CommandResult dflt = run_shell("DEEPMOE_MODEL=/nonexistent/default " + deepmoe_bin() + " logits --ids 1");
  EXPECT_EQ(dflt.code, 1);
  EXPECT_NE(dflt.err.find("make demo"), std::string::npos) << dflt.err;
  const CommandResult unwritable = deepmoe(base + "--ids 1 --out /nonexistent/dir/out.json");
  EXPECT_EQ(unwritable.code, 1);
  EXPECT_NE(unwritable.err.find("/nonexistent/dir/out.json"), std::string::npos) << unwritable.err;
}

// Without -m the model commands use $DEEPMOE_MODEL, else the bundled default model; a missing default says how
// to make it.
TEST(CliModelTools, DefaultModelWhenNoneIsGiven) {
  const CommandResult r = run_shell("DEEPMOE_MODEL=" + quote(kModel) + " " + deepmoe_bin() +
                                    " logits --ids 0,42,7 --format digest --positions last");
  ASSERT_EQ(r.code, 0) << r.err;
  const CommandResult with_m = deepmoe("logits -m " + quote(kModel) + " --ids 0,42,7 --format digest --positions last");
  EXPECT_EQ(r.out, with_m.out);
  const fs::path dir = scratch_dir();
  std::ofstream(dir / "t.txt") << "some text";
  const std::vector<std::string> commands = {"logits --ids 1", "perplexity -f " + quote((dir / "t.txt").string()),
                                            "bench"};
  for (const std::string& command : commands) {
    const CommandResult missing =
        run_shell("DEEPMOE_MODEL=/nonexistent/default " + deepmoe_bin() + " " + command);
    EXPECT_EQ(missing.code, 1) << command << ": " << missing.err;
    EXPECT_NE(missing.err.find("/nonexistent/default"), std::string::npos) << command << ": " << missing.err;
    EXPECT_NE(missing.err.find("make demo"), std::string::npos) << command << ": " << missing.err;
  }
  fs::remove_all(dir);
}

// -log softmax(row)[target] in double.
double nll(const float* row, int64_t vocab, int32_t target) {
  double max_logit = row[0];
  for (int64_t v = 1; v < vocab; ++v) max_logit = std::max(max_logit, double(row[v]));
  double z = 0;
  for (int64_t v = 0; v < vocab; ++v) z += std::exp(double(row[v]) - max_logit);
  return std::log(z) + max_logit - double(row[target]);
}

TEST(CliPerplexity, EqualsExpMeanNllOfTheChunks) {
  const fs::path dir = scratch_dir();
  const fs::path text = dir / "text.txt";
  {
    std::ofstream t(text);
    for (int i = 0; i < 6; ++i) t << "The quick brown fox jumps over the lazy dog, and then it rests in the sun. ";
  }
  const int ctx = 16, chunks = 3;
  const CommandResult r =
      deepmoe("perplexity -m " + quote(kModel) + " -f " + quote(text.string()) + " --ctx 16 --chunks 3 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  const size_t at = r.out.find("Final estimate: PPL = ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double ppl = std::stod(r.out.substr(at + 22));
  for (int c = 1; c <= chunks; ++c) {
    const std::string running = '[' + std::to_string(c) + ']';  // the running PPL after chunk c
    EXPECT_NE(r.out.find(running), std::string::npos) << r.out;
  }

  // llama.cpp's chunking written out here: chunk c = tokens [c·ctx, (c+1)·ctx) with its first token replaced by
  // BOS, run from an empty cache; positions ctx/2 … ctx-2 predict the text's next token.
  const auto tokenizer = Tokenizer::load(kModel);
  const std::vector<int32_t> tokens = tokenizer->encode(read_file(text), false, false);
  ASSERT_GE(tokens.size(), size_t(ctx * chunks));
  ExecutorOptions options;
  options.gemm = cli_default_gemm();
  auto model = Executor::load(kModel, options);
  const int64_t vocab = model->config().vocab_size;
  double sum = 0;
  int count = 0;
  for (int c = 0; c < chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx);
    chunk[0] = tokenizer->bos_id();
    auto seq = model->create_sequence();
    const Tensor logits = model->forward({SequenceInput::all(seq.get(), chunk)});
    for (int j = ctx / 2; j < ctx - 1; ++j) {
      sum += nll(logits.data<float>() + j * vocab, vocab, tokens[size_t(c * ctx + j + 1)]);
      ++count;
    }
  }
  ASSERT_EQ(count, chunks * (ctx - 1 - ctx / 2));
  // The tool prints 4 decimals.
  EXPECT_NEAR(ppl, std::exp(sum / count), 5e-5 + 1e-9 * ppl) << r.out;
  // Chunks batched together (the default batches up to 4) or one at a time: the same figures, byte for byte.
  for (const char* parallel : {"1", "2"}) {
    const CommandResult p = deepmoe("perplexity -m " + quote(kModel) + " -f " + quote(text.string()) +
                                    " --ctx 16 --chunks 3 --threads 1 --parallel " + parallel);
    ASSERT_EQ(p.code, 0) << p.err;
    EXPECT_EQ(p.out, r.out) << "--parallel " << parallel;
  }
  fs::remove_all(dir);
}

TEST(CliPerplexity, BadInputs) {
  const fs::path dir = scratch_dir();
  const std::string base = "perplexity -m " + quote(kModel);
  const CommandResult missing = deepmoe(base + " -f " + quote((dir / "missing.txt").string()));
  EXPECT_EQ(missing.code, 1) << missing.err;
  EXPECT_NE(missing.err.find("missing.txt"), std::string::npos) << missing.err;

  std::ofstream(dir / "short.txt") << "Just a few words.";
  const CommandResult short_text = deepmoe(base + " -f " + quote((dir / "short.txt").string()) + " --ctx 64");
  EXPECT_EQ(short_text.code, 1) << short_text.err;
  EXPECT_NE(short_text.err.find("--ctx = 64"), std::string::npos) << short_text.err;
  EXPECT_NE(short_text.err.find("short.txt"), std::string::npos) << short_text.err;

  for (const std::string ctx : {"0", "3", "-8", "many"}) {
    const CommandResult r = deepmoe(base + " -f " + quote((dir / "short.txt").string()) + " --ctx " + ctx);
    EXPECT_EQ(r.code, 2) << ctx << ": " << r.err;
    EXPECT_NE(r.err.find("--ctx"), std::string::npos) << ctx << ": " << r.err;
  }
  // Longer than the model's context (max_position_embeddings = 163840 on the tiny model).
  const CommandResult too_long = deepmoe(base + " -f " + quote((dir / "short.txt").string()) + " --ctx 200000");
  EXPECT_EQ(too_long.code, 1) << too_long.err;
  EXPECT_NE(too_long.err.find("max_position_embeddings"), std::string::npos) << too_long.err;
  EXPECT_EQ(deepmoe("perplexity -m " + quote(kModel)).code, 2);  // -f is required
  fs::remove_all(dir);
}

}  // namespace
}  // namespace deepmoe
