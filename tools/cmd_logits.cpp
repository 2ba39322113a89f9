// `deepmoe logits -m DIR --ids 0,42,7 [--ids ...] [--positions all|last] [--format json|f32|digest] [--out FILE]`:
// the logits of token sequences, each run as one request from an empty cache (one prefill from position 0), written
// so other implementations can be compared with ours:
//   json    one JSON object per request per line (JSON Lines; a single request is a single JSON document), every
//           float in its shortest form that reads back to the same float32;
//   f32     raw little-endian float32 behind a small header (layout in kF32FormatHelp, also in --help);
//   digest  one line per logits row: FNV-1a of the float bits and the top entries (short, diffable).
// Under `mpirun -np N` it runs as one job (tools/engine_options.h): rank 0 runs the requests and writes the
// output, the routed experts are spread over the ranks — byte for byte the output of a single process, since
// combine sums the top-k contributions in a fixed order.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>

#include "command.h"
#include "core/error.h"
#include "engine_options.h"
#include "model/config.h"
#include "parallel/chrome_trace.h"

namespace deepmoe::tools {
namespace {

constexpr char kF32Magic[8] = {'D', 'M', 'L', 'O', 'G', 'I', 'T', 'S'};
constexpr uint32_t kF32Version = 1;

const char* const kF32FormatHelp =
    "f32 layout (little-endian): 8-byte magic \"DMLOGITS\", u32 version (1), u32 rows, u32 vocab_size, "
    "u32 requests; then per row three i32: request index, position in its request, token id at that position; "
    "then rows x vocab_size float32 logits, row-major (rows in request order, then position order)";

struct LogitsArgs {
  EngineArgs engine;
  std::vector<std::string> requests;  // one comma-separated id list per --ids
  std::string positions = "all";
  std::string format = "json";
  std::string out;
  int top = 5;
  int64_t rebalance_after = 0;  // > 0: prefill that many tokens, rebalance the experts, then the rest
  std::string trace;
};

// "0,42,7" → ids; the syntax only (the vocabulary bound needs the model). Empty lists, empty items, signs,
// spaces and values beyond int32 are errors naming the offending item.
std::vector<int32_t> parse_id_list(const std::string& s) {
  if (s.empty()) throw Error("empty token id list");
  std::vector<int32_t> out;
  size_t start = 0;
  while (true) {
    const size_t comma = std::min(s.find(',', start), s.size());
    const std::string item = s.substr(start, comma - start);
    int64_t v = -1;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || v < 0 || v > INT32_MAX)
      throw Error("'" + item + "' is not a token id (a non-negative integer) in '" + s + "'");
    out.push_back(int32_t(v));
    if (comma == s.size()) break;
    start = comma + 1;
  }
  return out;
}

// One row of the output: which request, which position in it.
struct RowRef {
  size_t request;
  int64_t position;
};

class Output {
 public:
  explicit Output(const std::string& path) : path_(path.empty() ? "-" : path) {
    f_ = path_ == "-" ? stdout : std::fopen(path_.c_str(), "wb");
    if (!f_) throw Error("cannot create file: " + std::string(std::strerror(errno)), {path_, "", ""});
  }
  ~Output() {
    if (f_ && f_ != stdout) std::fclose(f_);
  }
  void write(const void* data, size_t n) {
    if (n && std::fwrite(data, 1, n, f_) != n)
      throw Error("cannot write: " + std::string(std::strerror(errno)), {path_, "", ""});
  }
  void write(const std::string& s) { write(s.data(), s.size()); }
  void close() {
    const bool ok = std::fflush(f_) == 0 && (f_ == stdout || std::fclose(f_) == 0);
    if (f_ != stdout) f_ = nullptr;
    if (!ok) throw Error("cannot write: " + std::string(std::strerror(errno)), {path_, "", ""});
  }

 private:
  std::string path_;
  FILE* f_ = nullptr;
};

void append_int(std::string& s, int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}

// Shortest decimal that reads back as the same float32 (std::to_chars guarantees the round trip); JSON has no
// NaN or infinity, so those are written as null.
void append_float(std::string& s, float v) {
  if (!std::isfinite(v)) {
    s += "null";
    return;
  }
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}

std::string json_line(const std::string& model, size_t request, const std::vector<int32_t>& ids,
                      const std::vector<int64_t>& positions, const float* rows, int64_t vocab) {
  // The path, escaped as JSON requires (bytes that are not UTF-8 become U+FFFD).
  std::string s =
      "{\"model\":" + nlohmann::json(model).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  s += ",\"request\":";
  append_int(s, int64_t(request));
  s += ",\"ids\":[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    append_int(s, ids[i]);
  }
  s += "],\"positions\":[";
  for (size_t i = 0; i < positions.size(); ++i) {
    if (i) s += ',';
    append_int(s, positions[i]);
  }
  s += "],\"vocab_size\":";
  append_int(s, vocab);
  s += ",\"logits\":[";
  for (size_t r = 0; r < positions.size(); ++r) {
    s += r ? ",[" : "[";
    const float* row = rows + int64_t(r) * vocab;
    for (int64_t i = 0; i < vocab; ++i) {
      if (i) s += ',';
      append_float(s, row[i]);
    }
    s += ']';
  }
  s += "]}\n";
  return s;
}

std::string digest_line(size_t request, int64_t position, int32_t token, const float* logits, int64_t vocab, int top) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the float bits
  for (int64_t i = 0; i < vocab; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &logits[i], 4);
    for (int b = 0; b < 4; ++b) h = (h ^ ((bits >> (8 * b)) & 0xFF)) * 0x100000001b3ull;
  }
  std::vector<int64_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const int64_t k = std::min<int64_t>(top, vocab);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  char buf[160];
  std::snprintf(buf, sizeof buf, "request %zu position %lld token %d: logits[%lld] fnv1a64=%016llx top:", request,
                (long long)position, token, (long long)vocab, (unsigned long long)h);
  std::string line = buf;
  for (int64_t i = 0; i < k; ++i) {
    std::snprintf(buf, sizeof buf, " %lld:%.9g", (long long)ids[size_t(i)], logits[ids[size_t(i)]]);
    line += buf;
  }
  return line + "\n";
}

void logits_on_leader(const LogitsArgs& args, Engine& model, const std::string& dir);

void run_logits(const LogitsArgs& args) {
  if (args.format == "f32" && (args.out.empty() || args.out == "-") && is_user_terminal(stdout))
    throw Error("--format f32 writes binary data; give --out FILE or redirect stdout");
  EngineJob job = open_engine_job(args.engine, /*with_tokenizer=*/false, [](ExecutorOptions& o) { o.load_mtp = false; });
  // With --trace every rank records its spans from one time origin and the leader writes them all.
  job.comm->barrier();
  TraceRecorder trace(job.comm->rank(), CommClock::now());
  if (!args.trace.empty()) job.engine().executor().set_trace(&trace);
  run_engine_job(job, [&] { logits_on_leader(args, job.engine(), job.model.dir); });
  job.engine().executor().set_trace(nullptr);
  if (!args.trace.empty()) write_chrome_trace(*job.comm, trace, args.trace);
}

// model.forward(batch), or with --rebalance-after K (live rebalance): each request's first min(K, n - 1)
// tokens in one forward call, then a rebalance of the experts (EPLB on the statistics of that call, weights moved
// between ranks), then the rest — the same rows, which must be bitwise those of one uninterrupted call.
Tensor forward_across_rebalance(Engine& model, const std::vector<EngineInput>& batch, int64_t after) {
  if (after <= 0) return model.forward(batch);
  std::vector<EngineInput> first, rest;
  for (const EngineInput& in : batch) {
    const int64_t n = int64_t(in.tokens.size()), cut = std::min<int64_t>(after, n - 1);
    EngineInput a{in.sequence, {in.tokens.begin(), in.tokens.begin() + cut}, {}};
    EngineInput b{in.sequence, {in.tokens.begin() + cut, in.tokens.end()}, {}};
    for (int64_t i : in.logit_indices) (i < cut ? a.logit_indices : b.logit_indices).push_back(i < cut ? i : i - cut);
    if (cut > 0) first.push_back(std::move(a));
    rest.push_back(std::move(b));
  }
  const Tensor l1 = model.forward(first);
  model.rebalance();
  const Tensor l2 = model.forward(rest);
  const int64_t vocab = l2.dim(1);
  int64_t rows = 0;
  for (const EngineInput& in : batch) rows += int64_t(in.logit_indices.size());
  Tensor out = Tensor::zeros(DType::F32, {rows, vocab});
  float* dst = out.data<float>();
  const float* p1 = l1.data<float>();
  const float* p2 = l2.data<float>();
  size_t j = 0;  // index into `first`
  for (size_t b = 0; b < batch.size(); ++b) {
    const size_t n1 = (j < first.size() && first[j].sequence == batch[b].sequence) ? first[j++].logit_indices.size() : 0;
    const size_t n2 = rest[b].logit_indices.size();
    dst = std::copy_n(p1, int64_t(n1) * vocab, dst);
    dst = std::copy_n(p2, int64_t(n2) * vocab, dst);
    p1 += int64_t(n1) * vocab;
    p2 += int64_t(n2) * vocab;
  }
  return out;
}

void logits_on_leader(const LogitsArgs& args, Engine& model, const std::string& dir) {
  std::vector<std::vector<int32_t>> requests;
  for (const auto& r : args.requests) requests.push_back(parse_id_list(r));
  const ModelConfig& config = model.config();
  const int64_t vocab = config.vocab_size;
  for (size_t i = 0; i < requests.size(); ++i) {
    for (int32_t id : requests[i])
      if (id >= vocab)
        throw Error("--ids: token id " + std::to_string(id) + " (request " + std::to_string(i) +
                    ") is outside the model's vocabulary [0, " + std::to_string(vocab) + ") of " + dir);
    // The same limit as every other command: positions past max_position_embeddings are refused, not computed.
    if (config.max_position_embeddings > 0 && int64_t(requests[i].size()) > config.max_position_embeddings)
      throw Error("--ids: request " + std::to_string(i) + " has " + std::to_string(requests[i].size()) +
                  " tokens, more than the model's context of " + std::to_string(config.max_position_embeddings) +
                  " tokens (max_position_embeddings)");
  }

  // Each request's positions; rows of the output in request order, then position order.
  const bool last_only = args.positions == "last";
  std::vector<std::vector<int64_t>> positions(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const int64_t n = int64_t(requests[i].size());
    for (int64_t p = last_only ? n - 1 : 0; p < n; ++p) positions[i].push_back(p);
  }

  // Every request in one step, each from an empty cache.
  std::vector<std::unique_ptr<EngineSequence>> sequences;
  std::vector<EngineInput> batch;
  for (size_t i = 0; i < requests.size(); ++i) {
    sequences.push_back(model.create_sequence());
    EngineInput in;
    in.sequence = sequences.back().get();
    in.tokens = requests[i];
    in.logit_indices = positions[i];
    batch.push_back(std::move(in));
  }
  const Tensor logits = forward_across_rebalance(model, batch, args.rebalance_after);  // [rows, vocab]
  DEEPMOE_CHECK(logits.dim(1) == vocab, "logits width");
  const int64_t row_bytes = vocab * int64_t(sizeof(float));
  std::vector<const float*> request_rows(requests.size());
  {
    const float* p = logits.data<float>();
    for (size_t i = 0; i < requests.size(); ++i) {
      request_rows[i] = p;
      p += int64_t(positions[i].size()) * vocab;
    }
  }

  Output out(args.out);
  if (args.format == "f32") {
    std::vector<int32_t> meta;
    for (size_t i = 0; i < requests.size(); ++i)
      for (int64_t p : positions[i]) meta.insert(meta.end(), {int32_t(i), int32_t(p), requests[i][size_t(p)]});
    const uint32_t head[4] = {kF32Version, uint32_t(meta.size() / 3), uint32_t(vocab), uint32_t(requests.size())};
    out.write(kF32Magic, sizeof kF32Magic);
    out.write(head, sizeof head);
    out.write(meta.data(), meta.size() * sizeof(int32_t));
    for (size_t i = 0; i < requests.size(); ++i)
      out.write(request_rows[i], positions[i].size() * size_t(row_bytes));
  } else {
    for (size_t i = 0; i < requests.size(); ++i) {
      if (args.format == "json") {
        out.write(json_line(dir, i, requests[i], positions[i], request_rows[i], vocab));
      } else {
        for (size_t r = 0; r < positions[i].size(); ++r)
          out.write(digest_line(i, positions[i][r], requests[i][size_t(positions[i][r])],
                                request_rows[i] + int64_t(r) * vocab, vocab, args.top));
      }
    }
  }
  out.close();
}

CommandRegistration registration{
    {"logits", "Write the logits of token sequences (JSON, raw float32 or a digest) to compare implementations; "
               "works under mpirun",
     [](CLI::App& sub) {
       auto args = std::make_shared<LogitsArgs>();
       add_engine_options(sub, args->engine);
       sub.add_option("--ids", args->requests,
                      "Token ids of one request, comma separated (e.g. 0,42,7); repeat for more requests, each "
                      "run from an empty cache")
           ->required()
           ->check(CLI::Validator(
               [](std::string& s) -> std::string {
                 try {
                   parse_id_list(s);
                   return {};
                 } catch (const Error& e) {
                   return e.message();
                 }
               },
               "ID,ID,...", "token id list"));
       sub.add_option("--positions", args->positions, "Logits of every position of a request or only its last")
           ->check(CLI::IsMember({"all", "last"}))
           ->capture_default_str();
       sub.add_option("--format", args->format,
                      "json: one object per request per line {model, request, ids, positions, vocab_size, "
                      "logits: [[row]...]} with shortest round-trip floats (NaN/inf as null); f32: raw float32 "
                      "with a header (below); digest: per row an FNV-1a hash of the float bits and the --top "
                      "entries")
           ->check(CLI::IsMember({"json", "f32", "digest"}))
           ->capture_default_str();
       sub.add_option("-o,--out", args->out, "Output file (default: stdout)");
       sub.add_option("--top", args->top, "Top entries per row in --format digest")
           ->check(CLI::Range(1, 100))
           ->capture_default_str();
       sub.add_option("--rebalance-after", args->rebalance_after,
                      "Prefill the first K tokens of each request, rebalance the experts over the ranks (EPLB on "
                      "the load of that prefill; weights move between ranks), then the rest: the logits must not "
                      "change (0 = off)")
           ->check(CLI::NonNegativeNumber);
       sub.add_option("--trace", args->trace,
                      "Write compute and communication spans per rank and micro-batch as Chrome-trace JSON");
       sub.footer(kF32FormatHelp);
       sub.callback([args] { run_logits(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
