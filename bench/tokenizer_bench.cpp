// Tokenizer throughput: MB/s of encode() single-thread and over all threads, on English prose
// (bench/data/tinyshakespeare.txt), code (deepmoe's own sources) and CJK text (vocabulary tokens made of CJK
// characters with CJK punctuation, drawn with a fixed seed). Inputs are cut into ~10 kB documents at line
// breaks, the size HF's published numbers use. Prints one JSON line per case (wall-clock MB/s, and MB per second
// of the thread's CPU time, which stays meaningful when other processes share the cores; the load average says
// how shared they were), plus the machine's single-thread STREAM-triad bandwidth for reference (DESIGN.md §7).
//
// Usage: tokenizer_bench [model_dir [case]] (default: assets/tokenizer of this source tree, all cases;
// case = english, code or cjk).
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/machine_limits.h"
#include "core/thread_pool.h"
#include "tokenizer/tokenizer.h"

namespace {

using deepmoe::Tokenizer;
namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> documents(const std::string& text, size_t target_bytes = 10000) {
  std::vector<std::string> docs;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + target_bytes);
    size_t nl = text.find('\n', end);
    end = (nl == std::string::npos) ? text.size() : nl + 1;
    docs.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return docs;
}

std::string code_corpus() {
  std::string all;
  for (const char* dir : {"src", "tools", "tests"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(DEEPMOE_SOURCE_DIR) / dir)) {
      auto ext = e.path().extension();
      if (e.is_regular_file() && (ext == ".cpp" || ext == ".h")) all += slurp(e.path());
    }
  }
  return all;
}

bool all_cjk(const std::string& s) {
  // Three-byte UTF-8 sequences in U+4E00..U+9FFF only.
  if (s.empty() || s.size() % 3) return false;
  for (size_t i = 0; i < s.size(); i += 3) {
    auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 < 0xE4 || b0 > 0xE9) return false;
  }
  return true;
}

std::string cjk_corpus(const Tokenizer& tok, size_t bytes) {
  std::vector<int32_t> words;
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (!tok.is_special(id) && all_cjk(tok.token_bytes(id))) words.push_back(id);
  std::mt19937 rng(2024);
  std::string out;
  while (out.size() < bytes) {
    out += tok.token_bytes(words[rng() % words.size()]);
    uint32_t r = rng() % 16;
    if (r == 0) out += "，";
    if (r == 1) out += "。\n";
  }
  return out;
}

// CPU time of the calling thread: on a shared machine wall time also counts time spent waiting for a core.
double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 1-minute load average: how shared the machine was while measuring.
double load_average() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

void bench(const Tokenizer& tok, const char* name, const std::string& text) {
  auto docs = documents(text);
  size_t tokens = 0;
  for (const auto& d : docs) tokens += tok.encode(d, false).size();  // warm-up (and token count)
  // Single thread: best of 3 passes.
  double best1 = 1e30, best1_cpu = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    double c0 = thread_cpu_seconds();
    size_t n = 0;
    for (const auto& d : docs) n += tok.encode(d, false).size();
    best1 = std::min(best1, seconds_since(t0));
    best1_cpu = std::min(best1_cpu, thread_cpu_seconds() - c0);
    if (n != tokens) std::fprintf(stderr, "token count changed between passes\n");
  }
  deepmoe::ThreadPool pool(0);
  double best_all = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    auto out = tok.encode_batch(docs, false, true, &pool);
    best_all = std::min(best_all, seconds_since(t0));
  }
  double mb = text.size() / 1e6;
  std::printf(
      "{\"bench\":\"tokenizer_encode\",\"text\":\"%s\",\"bytes\":%zu,\"tokens\":%zu,\"bytes_per_token\":%.2f,"
      "\"mb_per_s_1_thread\":%.2f,\"mb_per_cpu_s_1_thread\":%.2f,\"threads\":%d,\"mb_per_s_all_threads\":%.2f,"
      "\"load_average\":%.1f}\n",
      name, text.size(), tokens, double(text.size()) / tokens, mb / best1, mb / best1_cpu, pool.size(), mb / best_all,
      load_average());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : std::string(DEEPMOE_SOURCE_DIR) + "/assets/tokenizer";
  std::string only = argc > 2 ? argv[2] : "";
  auto wanted = [&](const char* name) { return only.empty() || only == name; };
  auto t0 = std::chrono::steady_clock::now();
  auto tok = Tokenizer::load(dir);
  std::printf("{\"bench\":\"tokenizer_load\",\"seconds\":%.3f}\n", seconds_since(t0));
  if (only.empty())
    std::printf("{\"bench\":\"machine\",\"stream_triad_gbps_1_thread\":%.2f}\n",
                deepmoe::measure_stream_triad_gbps(nullptr, size_t(64) << 20, 3));
  if (wanted("english")) bench(*tok, "english", slurp(fs::path(DEEPMOE_SOURCE_DIR) / "bench/data/tinyshakespeare.txt"));
  if (wanted("code")) bench(*tok, "code", code_corpus());
  if (wanted("cjk")) bench(*tok, "cjk", cjk_corpus(*tok, 1 << 20));
  return 0;
}
