// `deepmoe logits -m DIR --tokens 0,5,9 [--tokens ...]`: runs each token list as one request through the model and
// prints, per request in order, a digest of its last-position logits (FNV-1a of the float bits) and the top
// entries. Under `mpirun -np N` the requests are spread over the ranks (request i on rank i mod N, data-parallel
// attention, experts partitioned across ranks) and rank 0 prints the same lines — byte for byte the output of a
// single process, since combine sums the top-k contributions in a fixed order (issue 6).
#include <CLI/CLI.hpp>

// Compiled in once the model's forward pass (src/model/deepseek_model.cpp) is part of the build.
#ifdef DEEPMOE_HAVE_MODEL_FORWARD

#include <algorithm>
#include <climits>
#include <cstring>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "command.h"
#include "core/error.h"
#include "model/deepseek_model.h"
#include "parallel/communicator.h"

namespace deepmoe::tools {
namespace {

struct LogitsArgs {
  std::string model_dir;
  std::vector<std::string> requests;
  std::string gemm = "w8a32";
  int threads = 0;
  int top = 5;
};

std::vector<int32_t> parse_tokens(const std::string& s) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument("range");
      out.push_back(int32_t(v));
    } catch (const std::exception&) {
      throw Error("--tokens: '" + item + "' is not a token id");
    }
  }
  if (out.empty()) throw Error("--tokens: empty token list");
  return out;
}

std::string describe(size_t index, size_t n_tokens, const float* logits, int64_t vocab, int top) {
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
  char buf[128];
  std::snprintf(buf, sizeof buf, "request %zu: %zu tokens, logits[%lld] fnv1a64=%016llx top:", index, n_tokens,
                (long long)vocab, (unsigned long long)h);
  std::string line = buf;
  for (int64_t i = 0; i < k; ++i) {
    std::snprintf(buf, sizeof buf, " %lld:%.9g", (long long)ids[size_t(i)], logits[ids[size_t(i)]]);
    line += buf;
  }
  return line + "\n";
}

void run_logits_on(Communicator& comm_ref, const LogitsArgs& args);

void run_logits(const LogitsArgs& args) {
  auto comm = make_world_communicator();
  try {
    run_logits_on(*comm, args);
  } catch (const Error& e) {
    // Under MPI the other ranks may be waiting in a collective: report and end the whole job (non-zero exit).
    if (comm->size() > 1) comm->abort(e.what());
    throw;
  }
}

void run_logits_on(Communicator& comm_ref, const LogitsArgs& args) {
  Communicator* comm = &comm_ref;
  std::vector<std::vector<int32_t>> requests;
  for (const auto& r : args.requests) requests.push_back(parse_tokens(r));
  const int R = comm->size(), me = comm->rank();
  // Every rank takes part in every MoE layer's all-to-all, so each needs a request of its own.
  if (int(requests.size()) < R)
    throw Error("logits: " + std::to_string(requests.size()) + " request(s) for " + std::to_string(R) +
                " ranks; give at least one --tokens per rank");
  ModelOptions options;
  if (args.gemm == "w8a8")
    options.gemm = GemmMode::W8A8;
  else if (args.gemm != "w8a32")
    throw Error("--gemm must be w8a8 or w8a32, got '" + args.gemm + "'");
  options.threads = args.threads;
  options.load_mtp = false;
  auto model = DeepseekModel::load(args.model_dir, options, *comm);

  std::vector<std::unique_ptr<Sequence>> sequences;
  std::vector<SequenceInput> batch;
  std::vector<size_t> mine;
  for (size_t i = size_t(me); i < requests.size(); i += size_t(R)) {
    sequences.push_back(model->create_sequence());
    batch.push_back(SequenceInput::last(sequences.back().get(), requests[i]));
    mine.push_back(i);
  }
  Tensor logits = model->forward(batch);  // [mine.size(), vocab]
  const int64_t vocab = logits.dim(1);
  std::vector<std::string> lines(requests.size());
  std::string text;
  for (size_t j = 0; j < mine.size(); ++j)
    text += describe(mine[j], requests[mine[j]].size(), logits.data<float>() + int64_t(j) * vocab, vocab, args.top);

  // Gather every rank's lines on rank 0 (plain text of known length), then print in request order.
  const std::vector<int64_t> sizes = comm->all_gather(std::vector<int64_t>{int64_t(text.size())});
  std::vector<int64_t> sb(static_cast<size_t>(R), 0), so(static_cast<size_t>(R), 0);
  std::vector<int64_t> rb(static_cast<size_t>(R), 0), ro(static_cast<size_t>(R), 0);
  sb[0] = int64_t(text.size());
  int64_t total = 0;
  if (me == 0)
    for (int r = 0; r < R; ++r) rb[size_t(r)] = sizes[size_t(r)], ro[size_t(r)] = total, total += sizes[size_t(r)];
  std::string all(static_cast<size_t>(total), '\0');
  comm->all_to_all_v(text.data(), sb, so, all.data(), rb, ro)->wait();
  if (me != 0) return;
  for (int r = 0; r < R; ++r) {
    std::stringstream ss(all.substr(size_t(ro[size_t(r)]), size_t(rb[size_t(r)])));
    std::string line;
    for (size_t i = size_t(r); i < requests.size(); i += size_t(R)) {
      if (!std::getline(ss, line)) throw Error("logits: rank " + std::to_string(r) + " returned too few lines");
      lines[i] = line;
    }
  }
  for (const auto& l : lines) std::printf("%s\n", l.c_str());
}

CommandRegistration registration{
    {"logits", "Print a digest and the top entries of each request's last-position logits (works under mpirun)",
     [](CLI::App& sub) {
       auto args = std::make_shared<LogitsArgs>();
       sub.add_option("-m,--model", args->model_dir, "Model folder (default: $DEEPMOE_MODEL or the bundled model)");
       sub.add_option("--tokens", args->requests, "Comma-separated token ids of one request (repeat for more)")
           ->required();
       sub.add_option("--gemm", args->gemm, "w8a32 (FP32 activations) or w8a8 (FP8 activations, FP8 dispatch)")
           ->capture_default_str();
       sub.add_option("--threads", args->threads, "Worker threads per rank (0 = all)")->check(CLI::NonNegativeNumber);
       sub.add_option("--top", args->top, "Top entries to print")->check(CLI::Range(1, 100))->capture_default_str();
       sub.callback([args] {
         if (args->model_dir.empty()) args->model_dir = default_model_dir();
         run_logits(*args);
       });
     }}};

}  // namespace
}  // namespace deepmoe::tools

#endif  // DEEPMOE_HAVE_MODEL_FORWARD
