// Two-micro-batch overlap of MoE communication with compute (reference §6, prefill "dual micro-batch overlap").
// Run with `mpirun -np 2 moe_overlap_bench [--trace FILE]` (or alone: one rank).
//
// A synthetic prefill of `layers` MoE layers: per layer, "attention" costs attn_flops per token and the routed
// experts expert_flops per received row (FMA loops over the real activations, polling the communicator between
// chunks so non-blocking MPI collectives progress); dispatch/combine are the real ones (FP8 payload). Two
// schedules on the same batch:
//   serial:  ATTN(all) → DISPATCH(all) → MLP(all) → COMBINE(all)
//   overlap: ATTN(0) | ATTN(1) while DISPATCH(0) | MLP(0) while DISPATCH(1) | MLP(1) while COMBINE(0) |
//            next layer's ATTN(0) while COMBINE(1)
// and reports wall time, exposed communication time (blocking waits and the count exchanges on the compute
// thread) and the fraction of the serial schedule's communication that the overlap hides. Also checks that both
// schedules give bitwise identical outputs. One JSON line per schedule; --trace writes Chrome-trace JSON of the
// overlap run (Perfetto).
//
// With --model DIR the same comparison runs the real model's prefill (Executor, micro_batches 1 vs 2): each
// rank prefills its own prompt of --prompt tokens (--reps times each, alternating; the fastest rep is reported),
// exposed communication is the compute thread's time blocked in dispatch/combine (trace spans named "wait"),
// split into payload waits (rows not yet arrived: what the overlap can hide) and layout waits (dispatch's blocking
// count exchange, a synchronization point that also absorbs skew between ranks), in-flight communication the dispatch/combine spans from start to arrival; the last-position logits of both
// schedules must be bitwise equal. `mpirun -np 2 moe_overlap_bench --model DIR [--prompt 256] [--threads 1]
// [--reps 3] [--redundant-experts N] [--trace FILE]`.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/executor.h"
#include "parallel/chrome_trace.h"
#include "parallel/communicator.h"
#include "parallel/expert_placement.h"
#include "parallel/moe_dispatch.h"

using namespace deepmoe;

namespace {

struct Params {
  int64_t tokens = 1024, hidden = 1024;
  int layers = 4, experts = 32, topk = 8;
  int64_t attn_flops = 400000, expert_flops = 50000;  // per token / per received row
  std::string trace;
  // --model mode
  std::string model;
  int64_t prompt = 256;
  int threads = 1, reps = 3, redundant = 0;
};

// FMA work proportional to `flops` per row over the row's data; calls poll() every 16 rows.
void burn(float* rows, int64_t n, int64_t hidden, int64_t flops, const std::function<void()>& poll) {
  const int64_t reps = std::max<int64_t>(1, flops / (2 * hidden));
  for (int64_t r = 0; r < n; ++r) {
    float* x = rows + r * hidden;
    float acc = 0.0f;
    for (int64_t k = 0; k < reps; ++k)
      for (int64_t i = 0; i < hidden; ++i) acc = std::fma(x[i], 1.0000001f, acc * 0.5f);
    x[0] += acc * 1e-30f;  // keep the work observable; changes nothing at float precision for normal inputs
    if ((r & 15) == 15 && poll) poll();
  }
}

struct Batch {
  std::vector<float> x;
  std::vector<int64_t> idx;
  std::vector<float> w;
};

Batch make_batch(const Params& p, int rank, int layer) {
  Batch b;
  std::mt19937 rng(uint32_t(1000 * rank + layer));
  std::normal_distribution<float> nd;
  b.x.resize(size_t(p.tokens * p.hidden));
  for (auto& v : b.x) v = nd(rng);
  b.idx.resize(size_t(p.tokens * p.topk));
  b.w.assign(size_t(p.tokens * p.topk), 1.0f / float(p.topk));
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int j = 0; j < p.topk; ++j) b.idx[size_t(t * p.topk + j)] = (t * 7 + j * (p.experts / p.topk) + layer) % p.experts;
  return b;
}

struct Timing {
  double wall_ms = 0, exposed_comm_ms = 0;
};

// Runs the layers over micro-batches [0, split) and [split, T) (split = T: serial). Returns the final activations.
std::vector<float> run(Communicator& comm, const Params& p, const ExpertPlacement& placement, bool overlap,
                       TraceRecorder* trace, Timing& timing) {
  const int64_t T = p.tokens, H = p.hidden;
  std::vector<float> x = make_batch(p, comm.rank(), 0).x;
  std::vector<Batch> routes;
  for (int l = 0; l < p.layers; ++l) routes.push_back(make_batch(p, comm.rank(), l));
  const int n_mb = overlap ? 2 : 1;
  const int64_t bounds[3] = {0, overlap ? T / 2 : T, T};
  auto exposed = [&](const char* name, int mb, const std::function<void()>& fn) {
    auto t0 = CommClock::now();
    fn();
    auto t1 = CommClock::now();
    timing.exposed_comm_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
    if (trace) trace->add(std::string(name) + " wait", TraceLane::Compute, mb, t0, t1);
  };
  auto compute = [&](const std::string& name, int mb, const std::function<void()>& fn) {
    TraceRecorder::Scope s(trace, name, TraceLane::Compute, mb);
    fn();
  };
  std::vector<PendingDispatch> pd(2);
  std::vector<PendingCombine> pc(2);
  std::vector<DispatchResult> dr(2);
  std::vector<CommClock::time_point> comm_start(2);
  std::vector<Tensor> xs(2), idx(2), wt(2);
  std::function<void()> poll;  // progresses the collective in flight while compute runs
  const auto t_begin = CommClock::now();
  for (int l = 0; l < p.layers; ++l) {
    Batch& r = routes[size_t(l)];
    for (int mb = 0; mb < n_mb; ++mb) {
      const int64_t b0 = bounds[mb], b1 = overlap ? bounds[mb + 1] : T;
      compute("ATTN l" + std::to_string(l), mb, [&] { burn(x.data() + b0 * H, b1 - b0, H, p.attn_flops, poll); });
      if (mb == 0 && l > 0 && overlap) {  // the previous layer's COMBINE(1) ran during ATTN(0)
        exposed("COMBINE", 1, [&] {
          Tensor y = pc[1].finish();
          std::memcpy(x.data() + bounds[1] * H, y.data<float>(), y.nbytes());
        });
        if (trace) trace->add("COMBINE l" + std::to_string(l - 1), TraceLane::Comm, 1, comm_start[1], CommClock::now());
      }
      xs[size_t(mb)] = Tensor::view(DType::F32, {b1 - b0, H}, x.data() + b0 * H);
      idx[size_t(mb)] = Tensor::view(DType::I64, {b1 - b0, int64_t(p.topk)}, r.idx.data() + b0 * p.topk);
      wt[size_t(mb)] = Tensor::view(DType::F32, {b1 - b0, int64_t(p.topk)}, r.w.data() + b0 * p.topk);
      exposed("DISPATCH start", mb, [&] {
        comm_start[size_t(mb)] = CommClock::now();
        pd[size_t(mb)] = moe_dispatch_start(comm, placement, l, xs[size_t(mb)], idx[size_t(mb)], wt[size_t(mb)]);
      });
      if (overlap) poll = [&, mb] { pd[size_t(mb)].test(); };
    }
    for (int mb = 0; mb < n_mb; ++mb) {
      exposed("DISPATCH", mb, [&] { dr[size_t(mb)] = pd[size_t(mb)].finish(); });
      if (trace) trace->add("DISPATCH l" + std::to_string(l), TraceLane::Comm, mb, comm_start[size_t(mb)], CommClock::now());
      if (overlap && mb == 0) poll = [&] { pd[1].test(); };
      if (overlap && mb == 1) poll = [&] { pc[0].test(); };
      DispatchResult& d = dr[size_t(mb)];
      compute("MLP l" + std::to_string(l), mb, [&] { burn(d.x.data<float>(), d.x.dim(0), H, p.expert_flops, poll); });
      exposed("COMBINE start", mb, [&] {
        comm_start[size_t(mb)] = CommClock::now();
        pc[size_t(mb)] = moe_combine_start(comm, d.handle, d.x);
      });
    }
    const int last = (overlap && l + 1 < p.layers) ? 1 : n_mb;  // COMBINE(1) overlaps the next ATTN(0)
    for (int mb = 0; mb < last; ++mb) {
      const int64_t b0 = bounds[mb];
      exposed("COMBINE", mb, [&] {
        Tensor y = pc[size_t(mb)].finish();
        std::memcpy(x.data() + b0 * H, y.data<float>(), y.nbytes());
      });
      if (trace) trace->add("COMBINE l" + std::to_string(l), TraceLane::Comm, mb, comm_start[size_t(mb)], CommClock::now());
    }
    if (overlap && l + 1 < p.layers) poll = [&] { pc[1].test(); };
  }
  timing.wall_ms = std::chrono::duration<double, std::milli>(CommClock::now() - t_begin).count();
  return x;
}

struct ModelTiming {
  double wall_ms = 1e300, exposed_comm_ms = 0, inflight_comm_ms = 0;
  double attention_ms = 0, experts_ms = 0, shared_ms = 0;  // compute spans, to see what the split costs
  // Exposed communication split: waiting for dispatched/combined rows (what overlap can hide) vs the blocking
  // count exchange of dispatch's layout step (a synchronization point: it absorbs any skew between ranks).
  double payload_wait_ms = 0, layout_wait_ms = 0;
};

// Deterministic prompt tokens of this rank (a fixed LCG).
std::vector<int32_t> prompt_tokens(int64_t n, int64_t vocab, int rank) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint64_t x = 0x9E3779B97F4A7C15ull ^ uint64_t(rank + 1);
  for (auto& v : t) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v = int32_t((x >> 33) % uint64_t(vocab));
  }
  return t;
}

int run_model(Communicator& comm, const Params& p) {
  ExecutorOptions o;
  o.threads = p.threads;
  o.load_mtp = false;
  o.redundant_experts = p.redundant;
  std::unique_ptr<Executor> models[2];
  for (int m = 0; m < 2; ++m) {
    o.micro_batches = m + 1;
    models[m] = Executor::load(p.model, o, comm);
  }
  const auto tokens = prompt_tokens(p.prompt, models[0]->config().vocab_size, comm.rank());
  ModelTiming timing[2];
  std::vector<float> logits[2];
  for (int rep = -1; rep < p.reps; ++rep) {  // rep -1 warms up (page faults of the mmap)
    for (int m = 0; m < 2; ++m) {
      comm.barrier();
      TraceRecorder trace(comm.rank(), CommClock::now());
      models[m]->set_trace(&trace);
      auto seq = models[m]->create_sequence();
      const auto t0 = CommClock::now();
      Tensor l = models[m]->forward({SequenceInput::last(seq.get(), tokens)});
      const double wall = std::chrono::duration<double, std::milli>(CommClock::now() - t0).count();
      models[m]->set_trace(nullptr);
      logits[m].assign(l.data<float>(), l.data<float>() + l.numel());
      if (rep >= 0 && wall < timing[m].wall_ms) {
        // Span names match by prefix: "wait: dispatch" also counts "wait: dispatch layout".
        const double layout_us = trace.total_us(TraceLane::Compute, "wait: dispatch layout");
        timing[m] = {wall,
                     trace.total_us(TraceLane::Compute, "wait") / 1e3,
                     trace.lane_total_us(TraceLane::Comm) / 1e3,
                     trace.total_us(TraceLane::Compute, "attention") / 1e3,
                     trace.total_us(TraceLane::Compute, "experts") / 1e3,
                     trace.total_us(TraceLane::Compute, "shared") / 1e3,
                     (trace.total_us(TraceLane::Compute, "wait: dispatch") - layout_us +
                      trace.total_us(TraceLane::Compute, "wait: combine")) / 1e3,
                     layout_us / 1e3};
      }
      if (m == 1 && rep == p.reps - 1 && !p.trace.empty()) write_chrome_trace(comm, trace, p.trace);
    }
  }
  const bool identical = logits[0].size() == logits[1].size() &&
                         std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * 4) == 0;
  const double hidden_fraction =
      timing[0].exposed_comm_ms > 0 ? 1.0 - timing[1].exposed_comm_ms / timing[0].exposed_comm_ms : 0;
  const double payload_hidden_fraction =
      timing[0].payload_wait_ms > 0 ? 1.0 - timing[1].payload_wait_ms / timing[0].payload_wait_ms : 0;
  std::printf(
      "{\"bench\":\"model_prefill_overlap\",\"rank\":%d,\"ranks\":%d,\"comm\":\"%s\",\"model\":\"%s\",\"prompt\":%lld,"
      "\"threads\":%d,\"redundant_experts\":%d,\"serial_wall_ms\":%.2f,\"serial_exposed_comm_ms\":%.2f,"
      "\"serial_inflight_comm_ms\":%.2f,\"overlap_wall_ms\":%.2f,\"overlap_exposed_comm_ms\":%.2f,"
      "\"overlap_inflight_comm_ms\":%.2f,\"comm_hidden_fraction\":%.3f,\"serial_attention_ms\":%.1f,"
      "\"overlap_attention_ms\":%.1f,\"serial_experts_ms\":%.1f,\"overlap_experts_ms\":%.1f,\"serial_shared_ms\":%.1f,"
      "\"overlap_shared_ms\":%.1f,\"serial_payload_wait_ms\":%.2f,\"overlap_payload_wait_ms\":%.2f,"
      "\"payload_hidden_fraction\":%.3f,\"serial_layout_wait_ms\":%.2f,\"overlap_layout_wait_ms\":%.2f,"
      "\"identical\":%s}\n",
      comm.rank(), comm.size(), comm.kind().c_str(), p.model.c_str(), (long long)p.prompt, p.threads, p.redundant,
      timing[0].wall_ms, timing[0].exposed_comm_ms, timing[0].inflight_comm_ms, timing[1].wall_ms,
      timing[1].exposed_comm_ms, timing[1].inflight_comm_ms, hidden_fraction, timing[0].attention_ms,
      timing[1].attention_ms, timing[0].experts_ms, timing[1].experts_ms, timing[0].shared_ms, timing[1].shared_ms,
      timing[0].payload_wait_ms, timing[1].payload_wait_ms, payload_hidden_fraction, timing[0].layout_wait_ms,
      timing[1].layout_wait_ms, identical ? "true" : "false");
  std::fflush(stdout);
  return identical ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Params p;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--trace") p.trace = argv[i + 1];
    else if (a == "--tokens") p.tokens = std::stoll(argv[i + 1]);
    else if (a == "--hidden") p.hidden = std::stoll(argv[i + 1]);
    else if (a == "--layers") p.layers = std::stoi(argv[i + 1]);
    else if (a == "--attn-flops") p.attn_flops = std::stoll(argv[i + 1]);
    else if (a == "--expert-flops") p.expert_flops = std::stoll(argv[i + 1]);
    else if (a == "--model") p.model = argv[i + 1];
    else if (a == "--prompt") p.prompt = std::stoll(argv[i + 1]);
    else if (a == "--threads") p.threads = std::stoi(argv[i + 1]);
    else if (a == "--reps") p.reps = std::stoi(argv[i + 1]);
    else if (a == "--redundant-experts") p.redundant = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  auto comm = make_world_communicator();
  if (!p.model.empty()) {
    try {
      return run_model(*comm, p);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "moe_overlap_bench: error: %s\n", e.what());
      if (comm->size() > 1) comm->abort(e.what());
      return 1;
    }
  }
  auto placement = ExpertPlacement::uniform(p.layers, p.experts, comm->size(), 0);
  Timing serial, overlap;
  comm->barrier();
  std::vector<float> y_serial = run(*comm, p, placement, false, nullptr, serial);
  comm->barrier();
  TraceRecorder trace(comm->rank(), CommClock::now());
  std::vector<float> y_overlap = run(*comm, p, placement, true, p.trace.empty() ? nullptr : &trace, overlap);
  comm->barrier();
  const bool identical = std::memcmp(y_serial.data(), y_overlap.data(), y_serial.size() * 4) == 0;
  if (!p.trace.empty()) write_chrome_trace(*comm, trace, p.trace);
  const double hidden_fraction = serial.exposed_comm_ms > 0 ? 1.0 - overlap.exposed_comm_ms / serial.exposed_comm_ms : 0;
  std::printf(
      "{\"bench\":\"moe_overlap\",\"rank\":%d,\"ranks\":%d,\"comm\":\"%s\",\"tokens\":%lld,\"hidden\":%lld,"
      "\"layers\":%d,\"serial_wall_ms\":%.2f,\"serial_comm_ms\":%.2f,\"overlap_wall_ms\":%.2f,"
      "\"overlap_exposed_comm_ms\":%.2f,\"comm_hidden_fraction\":%.3f,\"identical\":%s}\n",
      comm->rank(), comm->size(), comm->kind().c_str(), (long long)p.tokens, (long long)p.hidden, p.layers,
      serial.wall_ms, serial.exposed_comm_ms, overlap.wall_ms, overlap.exposed_comm_ms, hidden_fraction,
      identical ? "true" : "false");
  return identical ? 0 : 1;
}
