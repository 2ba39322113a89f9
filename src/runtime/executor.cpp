// One step of the forward pass: model.py's Transformer.forward / Block.forward order (reference §1.3) over
// micro-batches, with the MoE layers run across the ranks.
#include "runtime/executor.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/error.h"
#include "model/config.h"
#include "model/expert_slot_storage.h"
#include "model/mla.h"
#include "model/model_weights.h"
#include "model/moe.h"
#include "parallel/chrome_trace.h"
#include "parallel/communicator.h"
#include "parallel/expert_load_stats.h"
#include "parallel/expert_migration.h"
#include "parallel/expert_placement.h"
#include "parallel/moe_dispatch.h"
#include "runtime/moe_layer_run.h"

namespace deepmoe {

// One micro-batch of a forward call: rows [r0, r0 + T) of the flattened batch, with its sequences' slices
// (offsets relative to r0) and the MoE layer it has in flight.
struct MicroBatch {
  int index = 0;
  float* x = nullptr;                 // [T, hidden] residual stream rows
  int64_t T = 0;
  const int64_t* positions = nullptr;  // [T]
  std::vector<SequenceSlice> slices;
  std::unique_ptr<Scratch> h, f;      // [T, hidden] normed input / block output
  std::unique_ptr<MoeLayerRun> moe;   // dispatched or combining, until its finish() adds to x
};

// A transformer block and where it sits: its index among the placement's MoE layers (-1 if dense) and the cache
// layer its attention reads and writes.
struct BlockRef {
  const LayerWeights* weights;
  int moe_layer;
  int64_t cache_layer;
};

struct Executor::Impl {
  ExecutorOptions opt;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Communicator> own_comm;
  Communicator* comm = nullptr;
  ExpertPlacement placement;
  std::unique_ptr<ExpertLoadStats> stats;
  // This forward call's counts: one record per micro-batch dispatch, summed into `stats` as one batch at the end
  // so that the window counts forward calls whatever the micro-batching.
  std::unique_ptr<ExpertLoadStats> call_stats;
  // [MoE layer][local slot]: the owned bytes of a slot received from another rank in a rebalance; null while the
  // slot points into the checkpoint's mmap. Shared, since a later rebalance may keep a slot in place.
  std::vector<std::vector<std::shared_ptr<ExpertSlotStorage>>> slot_storage;
  TraceRecorder* trace = nullptr;
  int64_t forward_calls = 0;  // for options.rebalance_every

  const ModelConfig& config() const { return model->config(); }
  const ForwardContext& ctx() const { return model->context(); }

  std::vector<int> local_experts(int moe_layer) const {
    std::vector<int> out;
    for (int s = 0; s < placement.slots_per_rank(); ++s)
      out.push_back(placement.logical_of_local(moe_layer, comm->rank(), s));
    return out;
  }

  // The MoE block of each placement layer.
  std::vector<LayerWeights*> moe_blocks() {
    std::vector<LayerWeights*> out(static_cast<size_t>(placement.n_layers()), nullptr);
    for (int64_t b = 0; b < model->n_blocks(); ++b)
      if (model->moe_layer_of(b) >= 0) out[size_t(model->moe_layer_of(b))] = &model->block(b);
    return out;
  }

  MoeRuntime moe_runtime(int moe_layer, int micro_batch) {
    MoeRuntime rt;
    rt.comm = comm;
    rt.placement = &placement;
    rt.placement_layer = moe_layer;
    rt.payload = opt.gemm == GemmMode::W8A8 ? DispatchPayload::FP8 : DispatchPayload::F32;
    rt.stats = call_stats.get();
    rt.trace = trace;
    rt.micro_batch = micro_batch;
    return rt;
  }

  TraceRecorder::Scope span(const char* name, int micro_batch) const {
    return TraceRecorder::Scope(trace, name, TraceLane::Compute, micro_batch);
  }

  // Collective: how many micro-batches this forward call uses. Every rank must take the same decision, since
  // each micro-batch is a dispatch/combine collective of its own; a rank with fewer tokens gets an empty one.
  int micro_batch_count(int64_t T) {
    const bool wanted = opt.micro_batches == 2 || (opt.micro_batches == 0 && comm->size() > 1);
    if (!wanted || placement.n_layers() == 0) return 1;
    int64_t max_T = T;
    if (comm->size() > 1)
      for (int64_t t : comm->all_gather(std::vector<int64_t>{T})) max_T = std::max(max_T, t);
    // Each micro-batch reads every expert's weights again. In a decode-sized step the experts get a few rows each
    // and are bound by those reads, so the overlap would cost more than it hides: the automatic mode splits only
    // steps of prefill size. (2 = always still splits from two rows, for tests and traces.)
    constexpr int64_t kAutoSplitRows = 128;
    if (opt.micro_batches == 0 && max_T < kAutoSplitRows) return 1;
    return max_T >= 2 ? 2 : 1;
  }

  // Splits rows [0, T) at the row that best balances attention work (Σ context length over the tokens; reference
  // §6: "balanced attention load", so one prompt may be split) and returns the micro-batches. A sequence cut in
  // two keeps its order: micro-batch 0 holds its earlier positions and runs each layer's attention first, so
  // micro-batch 1 finds their cache rows written.
  std::vector<MicroBatch> split_micro_batches(int n_mb, float* x, int64_t T, const int64_t* positions,
                                              const std::vector<SequenceSlice>& slices) {
    int64_t cut = T;
    if (n_mb == 2) {
      double total = 0;
      for (const auto& s : slices)
        for (int64_t i = 0; i < s.count; ++i) total += double(s.start + i + 1);
      double prefix = 0, best = total;
      cut = 0;
      for (const auto& s : slices)
        for (int64_t i = 0; i < s.count; ++i) {
          prefix += double(s.start + i + 1);
          const double imbalance = std::abs(2 * prefix - total);
          if (imbalance < best) best = imbalance, cut = s.offset + i + 1;
        }
      if (T >= 2) cut = std::clamp<int64_t>(cut, 1, T - 1);
    }
    std::vector<MicroBatch> mbs(static_cast<size_t>(n_mb));
    const int64_t H = config().hidden_size;
    for (int m = 0; m < n_mb; ++m) {
      MicroBatch& mb = mbs[size_t(m)];
      const int64_t r0 = m == 0 ? 0 : cut, r1 = m == 0 ? cut : T;
      mb.index = m;
      mb.x = x + r0 * H;
      mb.T = r1 - r0;
      mb.positions = positions + r0;
      for (const auto& s : slices) {
        const int64_t a = std::max(s.offset, r0), b = std::min(s.offset + s.count, r1);
        if (a >= b) continue;
        mb.slices.push_back({s.cache, s.cache_layer, s.start + (a - s.offset), a - r0, b - a});
      }
      mb.h = std::make_unique<Scratch>(mb.T * H);
      mb.f = std::make_unique<Scratch>(mb.T * H);
    }
    return mbs;
  }

  void add_into(MicroBatch& mb) {
    const int64_t n = mb.T * config().hidden_size;
    const float* f = mb.f->data();
    for (int64_t i = 0; i < n; ++i) mb.x[i] += f[i];
  }

  void finish_moe(MicroBatch& mb) {
    if (!mb.moe) return;
    mb.moe->finish(mb.f->data());
    mb.moe.reset();
    add_into(mb);
  }

  static void poll(std::vector<MicroBatch>& mbs) {
    for (auto& mb : mbs)
      if (mb.moe) mb.moe->poll();
  }

  // Transformer blocks (model.py Block.forward: x += attn(attn_norm(x)); x += ffn(ffn_norm(x))) over the
  // micro-batches, interleaved as in reference §6's prefill figure: per layer, micro-batch 0's attention and gate
  // start its dispatch; micro-batch 1's attention runs while it is in flight; then each micro-batch's experts run
  // while the other's dispatch or combine is in flight, its shared experts overlap its own combine, and the next
  // layer's attention of micro-batch 0 overlaps micro-batch 1's combine. With one micro-batch this is the plain
  // sequence of model.py.
  void run_blocks(const std::vector<BlockRef>& blocks, std::vector<MicroBatch>& mbs) {
    for (const BlockRef& b : blocks) {
      const LayerWeights& lw = *b.weights;
      for (auto& mb : mbs) {
        finish_moe(mb);
        for (auto& s : mb.slices) s.cache_layer = b.cache_layer;
        if (mb.T > 0) {
          auto span = this->span("attention", mb.index);
          model->attention(lw, mb.x, mb.T, mb.positions, mb.slices, mb.h->data(), mb.f->data());
        }
        poll(mbs);
        if (lw.moe) {
          mb.moe = std::make_unique<MoeLayerRun>(ctx(), lw.moe_weights, moe_runtime(b.moe_layer, mb.index),
                                                 mb.h->data(), mb.T);
          mb.moe->start_dispatch();
        } else if (mb.T > 0) {
          auto span = this->span("mlp", mb.index);
          model->dense_ffn(lw, mb.h->data(), mb.T, mb.f->data());
          add_into(mb);
        }
      }
      if (!lw.moe) continue;
      for (auto& mb : mbs) {
        mb.moe->run_experts();
        poll(mbs);
        mb.moe->run_shared();
        poll(mbs);
      }
    }
    for (auto& mb : mbs) finish_moe(mb);
    if (call_stats) {
      for (int l = 0; l < call_stats->n_layers(); ++l)
        if (call_stats->batches_in_window(l) > 0) stats->record(l, call_stats->window_load(l));
      call_stats->clear();
    }
  }
};

namespace {

void check_distinct(const std::vector<const Sequence*>& seqs) {
  std::unordered_set<const Sequence*> seen;
  for (const Sequence* s : seqs) {
    if (!s) throw Error("forward: a batch entry has no sequence");
    if (!seen.insert(s).second) throw Error("forward: the same sequence appears twice in one batch");
  }
}

void check_indices(const std::vector<int64_t>& idx, size_t n) {
  for (int64_t i : idx)
    if (i < 0 || i >= int64_t(n))
      throw Error("logit index " + std::to_string(i) + " is outside the " + std::to_string(n) + " new tokens");
}

}  // namespace

std::unique_ptr<Executor> Executor::load(const std::string& dir, const ExecutorOptions& options) {
  auto own = std::make_unique<SingleRankCommunicator>();
  Communicator& comm = *own;
  auto executor = load(dir, options, comm);
  executor->impl_->own_comm = std::move(own);
  return executor;
}

std::unique_ptr<Executor> Executor::load(const std::string& dir, const ExecutorOptions& options,
                                         Communicator& comm) {
  auto m = std::make_unique<Impl>();
  m->opt = options;
  m->comm = &comm;
  if (options.redundant_experts < 0)
    throw Error("redundant experts must be >= 0, got " + std::to_string(options.redundant_experts));
  if (options.micro_batches < 0 || options.micro_batches > 2)
    throw Error("micro_batches must be 0 (auto), 1 or 2, got " + std::to_string(options.micro_batches));
  if (options.load_window < 1) throw Error("load_window must be >= 1, got " + std::to_string(options.load_window));
  if (options.rebalance_every < 0)
    throw Error("rebalance_every must be >= 0, got " + std::to_string(options.rebalance_every));
  // The placement comes first: each rank binds the weights of the experts in its slots.
  const ModelConfig config = load_model_config(dir);
  const int n_moe = Transformer::count_moe_layers(config, options);
  if (n_moe > 0) {
    const int64_t physical = config.n_routed_experts + options.redundant_experts;
    if (physical % comm.size() != 0)
      throw Error(std::to_string(config.n_routed_experts) + " routed experts + " +
                  std::to_string(options.redundant_experts) + " redundant do not divide over " +
                  std::to_string(comm.size()) + " ranks (each rank hosts (experts + redundant) / ranks slots)");
    m->placement =
        ExpertPlacement::uniform(n_moe, int(config.n_routed_experts), comm.size(), options.redundant_experts);
  }
  const Impl& im = *m;
  m->model = Transformer::load(dir, options, [&im](int moe_layer) { return im.local_experts(moe_layer); });
  DEEPMOE_CHECK(m->model->n_moe_layers() == n_moe, "MoE layer count changed while loading");
  if (n_moe > 0) {
    const ModelConfig& c = m->config();
    m->stats = std::make_unique<ExpertLoadStats>(n_moe, int(c.n_routed_experts), options.load_window);
    m->call_stats = std::make_unique<ExpertLoadStats>(n_moe, int(c.n_routed_experts), 2);
  }
  m->slot_storage.resize(size_t(n_moe));
  for (auto& v : m->slot_storage) v.resize(size_t(m->placement.slots_per_rank()));
  return std::unique_ptr<Executor>(new Executor(std::move(m)));
}

Executor::Executor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Executor::~Executor() = default;

const ModelConfig& Executor::config() const { return impl_->config(); }
const ExecutorOptions& Executor::options() const { return impl_->opt; }
Transformer& Executor::transformer() { return *impl_->model; }
const Transformer& Executor::transformer() const { return *impl_->model; }
Communicator& Executor::comm() const { return *impl_->comm; }
bool Executor::has_mtp() const { return impl_->model->has_mtp(); }
uint64_t Executor::weight_bytes() const { return impl_->model->weight_bytes(); }
const ExpertPlacement& Executor::placement() const { return impl_->placement; }
void Executor::set_trace(TraceRecorder* trace) { impl_->trace = trace; }

const ExpertLoadStats& Executor::load_stats() const {
  if (!impl_->stats) throw Error("this model has no MoE layers, so no expert load statistics");
  return *impl_->stats;
}

uint64_t Executor::moved_expert_bytes() const {
  uint64_t total = 0;
  for (const auto& layer : impl_->slot_storage) {
    std::unordered_set<const ExpertSlotStorage*> seen;  // a slot kept in place twice (replicas) counts once
    for (const auto& s : layer)
      if (s && seen.insert(s.get()).second) total += uint64_t(s->bytes());
  }
  return total;
}

void Executor::rebalance() {
  Impl& m = *impl_;
  if (!m.stats) return;  // no MoE layers
  const ModelConfig& c = m.config();
  // EPLB's hierarchical policy with the config's expert groups on one node (the global policy when the groups do
  // not divide the experts).
  const int groups = c.n_group > 0 && c.n_routed_experts % c.n_group == 0 ? int(c.n_group) : 1;
  apply_placement(rebalance_placement(*m.stats, m.comm->size(), m.placement.n_physical(), groups, 1));
}

void Executor::apply_placement(const ExpertPlacement& next) {
  Impl& m = *impl_;
  const ModelConfig& c = m.config();
  if (next.n_layers() != m.placement.n_layers() || next.n_logical() != m.placement.n_logical() ||
      next.n_ranks() != m.comm->size())
    throw Error("apply_placement: the placement has " + std::to_string(next.n_layers()) + " MoE layers, " +
                std::to_string(next.n_logical()) + " experts and " + std::to_string(next.n_ranks()) +
                " ranks; the model needs " + std::to_string(m.placement.n_layers()) + ", " +
                std::to_string(m.placement.n_logical()) + " and " + std::to_string(m.comm->size()));
  TraceRecorder::Scope span(m.trace, "expert migration", TraceLane::Comm, 0);
  const std::vector<LayerWeights*> blocks = m.moe_blocks();
  // Every layer's layout first: a checkpoint that cannot be moved fails on every rank before anything moves.
  std::vector<ExpertSlotLayout> layouts;
  for (int pl = 0; pl < next.n_layers(); ++pl)
    layouts.push_back(ExpertSlotLayout::of_layer(m.model->checkpoint(), c, blocks[size_t(pl)]->index));
  for (int pl = 0; pl < next.n_layers(); ++pl) {
    MoeWeights& w = blocks[size_t(pl)]->moe_weights;
    const ExpertSlotLayout& layout = layouts[size_t(pl)];
    const int64_t bytes = layout.bytes_per_slot();
    const int new_slots = next.slots_per_rank(), me = m.comm->rank();
    // Slots this rank sources itself keep their weights in place (mmap or earlier storage); the others get their
    // own storage, filled by the exchange. The old bindings stay valid until the swap below.
    const std::vector<SlotSource> plan = plan_slot_sources(m.placement, next, pl, me);
    MoeWeights moved;
    moved.expert_gate.resize(size_t(new_slots));
    moved.expert_up.resize(size_t(new_slots));
    moved.expert_down.resize(size_t(new_slots));
    std::vector<std::shared_ptr<ExpertSlotStorage>> storage(static_cast<size_t>(new_slots));
    std::vector<void*> destination(static_cast<size_t>(new_slots), nullptr);
    for (int s = 0; s < new_slots; ++s) {
      const SlotSource& src = plan[size_t(s)];
      if (src.rank == me) {
        moved.expert_gate[size_t(s)] = w.expert_gate[size_t(src.local_slot)];
        moved.expert_up[size_t(s)] = w.expert_up[size_t(src.local_slot)];
        moved.expert_down[size_t(s)] = w.expert_down[size_t(src.local_slot)];
        storage[size_t(s)] = m.slot_storage[size_t(pl)][size_t(src.local_slot)];
      } else {
        storage[size_t(s)] = std::make_shared<ExpertSlotStorage>(bytes);
        destination[size_t(s)] = storage[size_t(s)]->data();
      }
    }
    migrate_expert_slots(
        *m.comm, m.placement, next, pl, bytes,
        [&](int slot, void* blob) { layout.pack(w, slot, static_cast<uint8_t*>(blob)); }, destination);
    for (int s = 0; s < new_slots; ++s)
      if (destination[size_t(s)]) layout.bind(storage[size_t(s)]->data(), moved, s);
    w.expert_gate = std::move(moved.expert_gate);
    w.expert_up = std::move(moved.expert_up);
    w.expert_down = std::move(moved.expert_down);
    m.slot_storage[size_t(pl)] = std::move(storage);
  }
  m.placement = next;
}

std::unique_ptr<Sequence> Executor::create_sequence() const { return impl_->model->create_sequence(); }

KvPools Executor::create_kv_pools(uint64_t budget_bytes, int64_t block_tokens) const {
  return impl_->model->create_kv_pools(budget_bytes, block_tokens);
}

std::unique_ptr<Sequence> Executor::create_sequence(const KvPools& pools, std::span<const int32_t> prompt) const {
  return impl_->model->create_sequence(pools, prompt);
}

Tensor Executor::forward(const std::vector<SequenceInput>& batch, Tensor* hidden,
                         const std::function<void()>& before_collectives) {
  Impl& m = *impl_;
  const ModelConfig& c = m.config();
  const int64_t H = c.hidden_size;
  std::vector<const Sequence*> seqs;
  for (const auto& in : batch) seqs.push_back(in.sequence);
  check_distinct(seqs);

  // Flatten the batch: rows of sequence b are [offset_b, offset_b + n_b), positions start at its cache length.
  std::vector<SequenceSlice> slices;
  std::vector<int64_t> positions;
  std::vector<int32_t> tokens;
  int64_t T = 0, n_out = 0;
  for (const auto& in : batch) {
    check_indices(in.logit_indices, in.tokens.size());
    for (int32_t t : in.tokens) m.model->check_token(t);
    const int64_t n = int64_t(in.tokens.size()), start = in.sequence->main.length();
    slices.push_back({&in.sequence->main, 0, start, T, n});
    for (int64_t i = 0; i < n; ++i) positions.push_back(start + i);
    tokens.insert(tokens.end(), in.tokens.begin(), in.tokens.end());
    T += n;
    n_out += int64_t(in.logit_indices.size());
  }
  for (auto& s : slices) s.cache->reserve(s.start + s.count);
  if (before_collectives) before_collectives();
  if (m.opt.rebalance_every > 0 && m.forward_calls > 0 && m.forward_calls % m.opt.rebalance_every == 0) rebalance();
  ++m.forward_calls;

  std::vector<float> x(static_cast<size_t>(T * H));  // h = embed(tokens): [T, hidden]
  {
    auto span = m.span("embed", 0);
    m.model->embed(tokens, x.data());
  }
  {
    std::vector<BlockRef> blocks;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) blocks.push_back({&m.model->block(l), m.model->moe_layer_of(l), l});
    auto mbs = m.split_micro_batches(m.micro_batch_count(T), x.data(), T, positions.data(), slices);
    m.run_blocks(blocks, mbs);
  }
  for (const auto& in : batch) in.sequence->main.advance(in.tokens);  // with the tokens: full blocks are published

  // Rows asked for: [n_out, hidden] before the final norm, then norm + lm_head.
  std::vector<float> rows(static_cast<size_t>(n_out * H));
  int64_t r = 0;
  for (size_t b = 0; b < batch.size(); ++b)
    for (int64_t i : batch[b].logit_indices) std::copy_n(x.data() + (slices[b].offset + i) * H, H, rows.data() + (r++) * H);
  if (hidden) {
    int64_t n_hidden = 0;
    for (size_t b = 0; b < batch.size(); ++b)
      n_hidden += batch[b].hidden_of_all_tokens ? slices[b].count : int64_t(batch[b].logit_indices.size());
    *hidden = Tensor::zeros(DType::F32, {n_hidden, H});
    float* out = hidden->data<float>();
    int64_t logit_row = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t n_logits = int64_t(batch[b].logit_indices.size());
      if (batch[b].hidden_of_all_tokens) {
        out = std::copy_n(x.data() + slices[b].offset * H, slices[b].count * H, out);
      } else {
        out = std::copy_n(rows.data() + logit_row * H, n_logits * H, out);
      }
      logit_row += n_logits;
    }
  }
  auto span = m.span("lm_head", 0);
  return m.model->logits(rows.data(), n_out, false);
}

Tensor Executor::forward_mtp(const std::vector<MtpInput>& batch, Tensor* hidden,
                             const std::function<void()>& before_collectives) {
  Impl& m = *impl_;
  if (!m.model->has_mtp())
    throw Error("this model has no MTP layer loaded (num_nextn_predict_layers = 0 or load_mtp off)");
  const ModelConfig& c = m.config();
  const int64_t H = c.hidden_size;
  std::vector<const Sequence*> seqs;
  for (const auto& in : batch) seqs.push_back(in.sequence);
  check_distinct(seqs);

  std::vector<SequenceSlice> slices;
  std::vector<int64_t> positions;
  int64_t T = 0, n_out = 0;
  for (const auto& in : batch) {
    const int64_t n = int64_t(in.next_tokens.size());
    if (in.hidden.rank() != 2 || in.hidden.dim(0) != n || in.hidden.dim(1) != H || in.hidden.dtype() != DType::F32)
      throw Error("MTP input hidden must be F32 [" + std::to_string(n) + ", " + std::to_string(H) + "], got " +
                  in.hidden.shape_string());
    check_indices(in.logit_indices, size_t(n));
    for (int32_t t : in.next_tokens) m.model->check_token(t);
    const int64_t start = in.sequence->mtp.length();
    slices.push_back({&in.sequence->mtp, 0, start, T, n});
    for (int64_t i = 0; i < n; ++i) positions.push_back(start + i);
    T += n;
    n_out += int64_t(in.logit_indices.size());
  }
  for (auto& s : slices) s.cache->reserve(s.start + s.count);
  if (before_collectives) before_collectives();

  std::vector<float> x(static_cast<size_t>(T * H));
  {
    std::vector<float> hidden_in;
    std::vector<int32_t> next_tokens;
    hidden_in.reserve(size_t(T * H));
    for (const auto& in : batch) {
      const float* h = in.hidden.data<const float>();
      hidden_in.insert(hidden_in.end(), h, h + in.hidden.numel());
      next_tokens.insert(next_tokens.end(), in.next_tokens.begin(), in.next_tokens.end());
    }
    auto span = m.span("mtp input", 0);
    m.model->mtp_input(hidden_in.data(), next_tokens, positions.data(), T, x.data());
  }
  {
    const int64_t mtp_block = c.num_hidden_layers;
    auto mbs = m.split_micro_batches(m.micro_batch_count(T), x.data(), T, positions.data(), slices);
    m.run_blocks({{&m.model->block(mtp_block), m.model->moe_layer_of(mtp_block), 0}}, mbs);
  }
  for (const auto& s : slices) s.cache->advance(s.count);

  std::vector<float> rows(static_cast<size_t>(n_out * H));
  int64_t r = 0;
  for (size_t b = 0; b < batch.size(); ++b)
    for (int64_t i : batch[b].logit_indices) std::copy_n(x.data() + (slices[b].offset + i) * H, H, rows.data() + (r++) * H);
  if (hidden) {
    *hidden = Tensor::zeros(DType::F32, {n_out, H});
    std::copy(rows.begin(), rows.end(), hidden->data<float>());
  }
  auto span = m.span("lm_head", 0);
  return m.model->logits(rows.data(), n_out, true);
}

}  // namespace deepmoe
