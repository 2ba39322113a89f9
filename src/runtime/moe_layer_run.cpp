#include "runtime/moe_layer_run.h"

#include <optional>

#include "core/error.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/moe.h"
#include "parallel/chrome_trace.h"
#include "parallel/moe_dispatch.h"

namespace deepmoe {

struct MoeLayerRun::State {
  const ForwardContext& ctx;
  const MoeWeights& w;
  MoeRuntime rt;
  const float* x;
  int64_t T;
  enum class Phase { Created, Dispatching, Combining, Shared, Done } phase = Phase::Created;
  MoeRouting routing;
  PendingDispatch dispatch;
  std::optional<DispatchResult> dispatched;  // its handle must outlive the combine
  Tensor expert_out;                         // the combine's send buffer: alive until finish
  PendingCombine combine;
  std::unique_ptr<Scratch> shared_out;  // z [T, hidden]
  bool has_shared = false;
  CommClock::time_point dispatch_started, combine_started;

  State(const ForwardContext& c, const MoeWeights& weights, const MoeRuntime& r, const float* in, int64_t n)
      : ctx(c), w(weights), rt(r), x(in), T(n) {}

  // A compute-lane span; names starting with "wait" are time the compute thread spent blocked on communication.
  TraceRecorder::Scope span(const char* name) const {
    return TraceRecorder::Scope(rt.trace, name, TraceLane::Compute, rt.micro_batch);
  }
};

MoeLayerRun::MoeLayerRun(const ForwardContext& ctx, const MoeWeights& w, const MoeRuntime& rt, const float* x,
                         int64_t T)
    : st_(std::make_unique<State>(ctx, w, rt, x, T)) {}

MoeLayerRun::~MoeLayerRun() = default;

void MoeLayerRun::start_dispatch() {
  State& s = *st_;
  DEEPMOE_CHECK(s.phase == State::Phase::Created, "MoE phases out of order");
  {
    auto span = s.span("gate");
    s.routing = moe_gate(s.ctx, s.w, s.x, s.T);
  }
  // Dispatch: the count exchange is a blocking collective (exposed communication); the payload goes non-blocking.
  Tensor xt = Tensor::view(DType::F32, {s.T, s.ctx.config->hidden_size}, const_cast<float*>(s.x));
  DispatchOptions opt;
  opt.payload = s.rt.payload;
  opt.pool = s.ctx.pool;
  opt.stats = s.rt.stats;
  auto span = s.span("wait: dispatch layout");
  s.dispatch_started = CommClock::now();
  s.dispatch = moe_dispatch_start(*s.rt.comm, *s.rt.placement, s.rt.placement_layer, xt, s.routing.topk_idx,
                                  s.routing.topk_weight, opt);
  s.phase = State::Phase::Dispatching;
}

void MoeLayerRun::run_experts() {
  State& s = *st_;
  DEEPMOE_CHECK(s.phase == State::Phase::Dispatching, "MoE phases out of order");
  {
    auto span = s.span("wait: dispatch");
    s.dispatched.emplace(s.dispatch.finish());
  }
  if (s.rt.trace) s.rt.trace->add("dispatch", TraceLane::Comm, s.rt.micro_batch, s.dispatch_started, CommClock::now());
  DispatchResult& d = *s.dispatched;
  const int64_t rows = d.x.dim(0), slots = int64_t(d.row_offsets.size()) - 1;
  {
    // This rank's experts on the rows sent to it (unweighted; the combine applies the top-k weights).
    auto span = s.span("experts");
    s.expert_out = Tensor::uninitialized(DType::F32, {rows, s.ctx.config->hidden_size});
    moe_routed_experts(s.ctx, s.w, d.x.data<float>(), d.row_offsets.data(), slots, s.expert_out.data<float>());
    // Combine: y[t] = Σ_j w[t,j] · expert(t, j) in j order, summed at the source.
    s.combine_started = CommClock::now();
    s.combine = moe_combine_start(*s.rt.comm, d.handle, s.expert_out);
  }
  s.phase = State::Phase::Combining;
}

void MoeLayerRun::run_shared() {
  State& s = *st_;
  DEEPMOE_CHECK(s.phase == State::Phase::Combining, "MoE phases out of order");
  if (s.w.has_shared && s.T > 0) {
    auto span = s.span("shared");
    s.shared_out = std::make_unique<Scratch>(s.T * s.ctx.config->hidden_size);
    s.has_shared = moe_shared_experts(s.ctx, s.w, s.x, s.T, s.shared_out->data());  // z = shared_experts(x)
  }
  s.phase = State::Phase::Shared;
}

void MoeLayerRun::finish(float* out) {
  State& s = *st_;
  DEEPMOE_CHECK(s.phase == State::Phase::Shared, "MoE phases out of order");
  Tensor y;
  {
    auto span = s.span("wait: combine");
    y = s.combine.finish();
  }
  if (s.rt.trace) s.rt.trace->add("combine", TraceLane::Comm, s.rt.micro_batch, s.combine_started, CommClock::now());
  const int64_t n = s.T * s.ctx.config->hidden_size;
  const float* yr = y.data<float>();
  if (s.has_shared) {
    const float* z = s.shared_out->data();
    for (int64_t i = 0; i < n; ++i) out[i] = yr[i] + z[i];  // model.py: y + z
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = yr[i];
  }
  s.dispatched.reset();
  s.expert_out = Tensor();
  s.phase = State::Phase::Done;
}

void MoeLayerRun::poll() {
  State& s = *st_;
  if (s.phase == State::Phase::Dispatching) s.dispatch.test();
  if (s.phase == State::Phase::Combining || s.phase == State::Phase::Shared) s.combine.test();
}

void moe_layer_forward(const ForwardContext& ctx, const MoeWeights& w, const MoeRuntime& rt, const float* x,
                       int64_t T, float* out) {
  MoeLayerRun run(ctx, w, rt, x, T);
  run.start_dispatch();
  run.run_experts();
  run.run_shared();
  run.finish(out);
}

}  // namespace deepmoe
