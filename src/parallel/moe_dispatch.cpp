#include "parallel/moe_dispatch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "core/buffer_cache.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/quantize.h"
#include "parallel/expert_load_stats.h"

namespace deepmoe {
namespace {

constexpr int64_t kTile = 128;  // activation quantization tile: 1×128 (paper §3.3)
constexpr int64_t kEntryBytes = 12;  // wire entry: int32 token index in message, int32 local slot, f32 weight
// Upper bound for any received count: a peer claiming more is broken or hostile (reliability.md §3, D5).
constexpr int64_t kMaxCount = int64_t(1) << 31;

int64_t round_up8(int64_t v) { return (v + 7) / 8 * 8; }
int64_t n_tiles(int64_t hidden) { return (hidden + kTile - 1) / kTile; }

// Bytes of one token row on the wire, padded to 8 so that every row and section starts aligned.
int64_t payload_row_bytes(DispatchPayload p, int64_t hidden) {
  switch (p) {
    case DispatchPayload::F32: return round_up8(4 * hidden);
    case DispatchPayload::BF16: return round_up8(2 * hidden);
    case DispatchPayload::FP8: return round_up8(4 * n_tiles(hidden) + hidden);  // scales, then e4m3 values
  }
  return 0;
}

int64_t combine_row_bytes(CombinePayload p, int64_t hidden) {
  return p == CombinePayload::F32 ? round_up8(4 * hidden) : round_up8(2 * hidden);
}

// FP8 rows are quantized by kernels' act_quant (1×128 tiles, s = max(amax, 1e-4)/448, UE8M0 optional, q = x / s).
void pack_row(const float* x, int64_t hidden, DispatchPayload p, bool ue8m0, char* out) {
  switch (p) {
    case DispatchPayload::F32: std::memcpy(out, x, size_t(hidden) * 4); return;
    case DispatchPayload::BF16: convert_f32_to_bf16(x, reinterpret_cast<uint16_t*>(out), size_t(hidden)); return;
    case DispatchPayload::FP8: {
      float* scales = reinterpret_cast<float*>(out);
      uint8_t* q = reinterpret_cast<uint8_t*>(out) + 4 * n_tiles(hidden);
      quantize_act_1x128(x, 1, hidden, q, scales, ue8m0);
      return;
    }
  }
}

void unpack_row(const char* in, int64_t hidden, DispatchPayload p, float* out, uint8_t* fp8_out, float* scales_out) {
  switch (p) {
    case DispatchPayload::F32: std::memcpy(out, in, size_t(hidden) * 4); return;
    case DispatchPayload::BF16: convert_bf16_to_f32(reinterpret_cast<const uint16_t*>(in), out, size_t(hidden)); return;
    case DispatchPayload::FP8: {
      const float* scales = reinterpret_cast<const float*>(in);
      const uint8_t* q = reinterpret_cast<const uint8_t*>(in) + 4 * n_tiles(hidden);
      convert_fp8_e4m3_to_f32(q, out, size_t(hidden));
      for (int64_t b = 0; b < n_tiles(hidden); ++b) {
        const int64_t begin = b * kTile, len = std::min(kTile, hidden - begin);
        for (int64_t i = 0; i < len; ++i) out[begin + i] *= scales[b];
      }
      std::memcpy(fp8_out, q, size_t(hidden));
      std::memcpy(scales_out, scales, size_t(n_tiles(hidden)) * 4);
      return;
    }
  }
}

std::vector<int64_t> read_topk_idx(const Tensor& t) {
  std::vector<int64_t> out(size_t(t.numel()));
  if (t.dtype() == DType::I64)
    std::memcpy(out.data(), t.raw(), out.size() * 8);
  else
    for (size_t i = 0; i < out.size(); ++i) out[i] = t.data<int32_t>()[i];
  return out;
}

std::vector<int64_t> exclusive_offsets(std::span<const int64_t> sizes) {
  std::vector<int64_t> ofs(sizes.size() + 1, 0);
  for (size_t i = 0; i < sizes.size(); ++i) ofs[i + 1] = ofs[i] + sizes[i];
  return ofs;
}

}  // namespace

std::vector<int64_t> replica_quotas(const ExpertPlacement& placement, int layer,
                                    std::span<const int64_t> tokens_per_logical, bool balance) {
  const int E = placement.n_logical();
  DEEPMOE_CHECK(tokens_per_logical.size() == size_t(E));
  std::vector<int64_t> quota(size_t(placement.n_physical()), 0);
  std::vector<int64_t> rank_load(size_t(placement.n_ranks()), 0);
  std::vector<int> replicated;
  for (int e = 0; e < E; ++e) {
    auto reps = placement.replicas(layer, e);
    if (reps.size() == 1 || !balance) {
      quota[size_t(reps[0])] += tokens_per_logical[size_t(e)];
      rank_load[size_t(placement.rank_of_slot(reps[0]))] += tokens_per_logical[size_t(e)];
    } else {
      replicated.push_back(e);
    }
  }
  // Heaviest first: the greedy min-max order of EPLB's replicate_experts, applied to this batch.
  std::stable_sort(replicated.begin(), replicated.end(), [&](int a, int b) {
    return tokens_per_logical[size_t(a)] > tokens_per_logical[size_t(b)];
  });
  // Start from EPLB's model (each replica takes an equal share), then re-split one replicated expert at a time
  // optimally with all other loads fixed (water-filling its ranks), heaviest first, for two passes. Each step
  // can only lower the busiest rank's load, so the result is never worse than the even split.
  std::vector<int> first_slot_on_rank(static_cast<size_t>(placement.n_ranks()), -1);
  std::vector<std::vector<int>> ranks_of(replicated.size());     // distinct ranks hosting each, ascending
  std::vector<std::vector<int64_t>> share_of(replicated.size());  // tokens per such rank
  for (size_t k = 0; k < replicated.size(); ++k) {
    auto reps = placement.replicas(layer, replicated[k]);
    const int64_t C = tokens_per_logical[size_t(replicated[k])], n = int64_t(reps.size());
    for (int64_t i = 0; i < n; ++i) {  // C/n per replica (EPLB's model), summed per rank
      const int r = placement.rank_of_slot(reps[size_t(i)]);
      if (ranks_of[k].empty() || ranks_of[k].back() != r) {
        ranks_of[k].push_back(r);
        share_of[k].push_back(0);
      }
      const int64_t share = C / n + (i < C % n ? 1 : 0);
      share_of[k].back() += share;
      rank_load[size_t(r)] += share;
    }
  }
  std::vector<std::pair<int64_t, int>> level;  // (load without this expert, index into ranks_of[k])
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t k = 0; k < replicated.size(); ++k) {
      const auto& ranks = ranks_of[k];
      const size_t m = ranks.size();
      level.clear();
      for (size_t i = 0; i < m; ++i) {
        rank_load[size_t(ranks[i])] -= share_of[k][i];
        level.push_back({rank_load[size_t(ranks[i])], int(i)});
      }
      std::sort(level.begin(), level.end());
      // Raise the j least-loaded ranks to a common level that absorbs all C tokens.
      const int64_t C = tokens_per_logical[size_t(replicated[k])];
      size_t j = 1;
      int64_t below = level[0].first;  // sum of the loads of the first j ranks
      while (j < m && int64_t(j) * level[j].first - below <= C) below += level[j++].first;
      const int64_t total = C + below, base = total / int64_t(j), extra = total % int64_t(j);
      // The `extra` lowest-numbered ranks among the j take one token more.
      std::vector<int> chosen;
      for (size_t i = 0; i < j; ++i) chosen.push_back(level[i].second);
      std::sort(chosen.begin(), chosen.end());
      std::fill(share_of[k].begin(), share_of[k].end(), 0);
      for (size_t i = 0; i < j; ++i) {
        const int idx = chosen[i];
        const int64_t share = base + (int64_t(i) < extra ? 1 : 0) - rank_load[size_t(ranks[size_t(idx)])];
        DEEPMOE_CHECK(share >= 0);
        share_of[k][size_t(idx)] = share;
      }
      for (size_t i = 0; i < m; ++i) rank_load[size_t(ranks[i])] += share_of[k][i];
    }
  }
  // A rank's share goes to its lowest replica slot of the expert.
  for (size_t k = 0; k < replicated.size(); ++k) {
    for (int slot : placement.replicas(layer, replicated[k])) {
      const int r = placement.rank_of_slot(slot);
      if (first_slot_on_rank[size_t(r)] < 0) first_slot_on_rank[size_t(r)] = slot;
    }
    for (size_t i = 0; i < ranks_of[k].size(); ++i) {
      quota[size_t(first_slot_on_rank[size_t(ranks_of[k][i])])] += share_of[k][i];
      first_slot_on_rank[size_t(ranks_of[k][i])] = -1;
    }
  }
  return quota;
}

DispatchLayout compute_dispatch_layout(const ExpertPlacement& placement, int layer, std::span<const int64_t> topk_idx,
                                       int64_t n_tokens, int topk, int rank,
                                       std::span<const int64_t> tokens_per_logical_by_rank, bool balance) {
  const int E = placement.n_logical(), R = placement.n_ranks();
  DEEPMOE_CHECK(topk_idx.size() == size_t(n_tokens * topk));
  DEEPMOE_CHECK(tokens_per_logical_by_rank.size() == size_t(R) * size_t(E));
  DEEPMOE_CHECK(rank >= 0 && rank < R);
  std::vector<int64_t> global(static_cast<size_t>(E), 0), prefix(static_cast<size_t>(E), 0);
  for (int s = 0; s < R; ++s)
    for (int e = 0; e < E; ++e) {
      int64_t c = tokens_per_logical_by_rank[size_t(s) * size_t(E) + size_t(e)];
      if (s < rank) prefix[size_t(e)] += c;
      global[size_t(e)] += c;
    }
  const std::vector<int64_t> quota = replica_quotas(placement, layer, global, balance);

  DispatchLayout L;
  L.n_ranks = R;
  L.tokens_per_rank.assign(static_cast<size_t>(R), 0);
  L.entries_per_rank.assign(static_cast<size_t>(R), 0);
  L.tokens_per_slot.assign(size_t(placement.n_physical()), 0);
  L.token_in_rank.assign(size_t(n_tokens) * size_t(R), 0);
  L.slot_of_pair.assign(size_t(n_tokens) * size_t(topk), -1);
  // A token's replica follows from its position g in the global, rank-ordered list of its expert's tokens: the
  // replicas (in slot order) take consecutive ranges of that list, sized by their quotas.
  std::vector<int64_t> next_g = prefix;
  std::vector<int> cursor(static_cast<size_t>(E), 0);       // index into replicas(e)
  std::vector<int64_t> range_end(static_cast<size_t>(E), -1);  // end of the current replica's range
  for (int e = 0; e < E; ++e) range_end[size_t(e)] = quota[size_t(placement.replicas(layer, e)[0])];
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int j = 0; j < topk; ++j) {
      const int64_t e = topk_idx[size_t(t * topk + j)];
      if (e == -1) continue;
      if (e < -1 || e >= E)
        throw Error("dispatch: token " + std::to_string(t) + " routes to expert " + std::to_string(e) +
                    ", outside [0, " + std::to_string(E) + ")");
      auto reps = placement.replicas(layer, int(e));
      const int64_t g = next_g[size_t(e)]++;
      int& c = cursor[size_t(e)];
      while (g >= range_end[size_t(e)] && c + 1 < int(reps.size()))
        range_end[size_t(e)] += quota[size_t(reps[size_t(++c)])];
      const int slot = reps[size_t(c)];
      const int r = placement.rank_of_slot(slot);
      L.slot_of_pair[size_t(t * topk + j)] = slot;
      ++L.tokens_per_slot[size_t(slot)];
      ++L.entries_per_rank[size_t(r)];
      uint8_t& in = L.token_in_rank[size_t(t) * size_t(R) + size_t(r)];
      if (!in) {
        in = 1;
        ++L.tokens_per_rank[size_t(r)];
      }
    }
  }
  for (int e = 0; e < E; ++e)
    if (next_g[size_t(e)] - prefix[size_t(e)] != tokens_per_logical_by_rank[size_t(rank) * size_t(E) + size_t(e)])
      throw Error("dispatch: rank " + std::to_string(rank) + " has " +
                  std::to_string(next_g[size_t(e)] - prefix[size_t(e)]) + " tokens for expert " + std::to_string(e) +
                  " but announced " + std::to_string(tokens_per_logical_by_rank[size_t(rank) * size_t(E) + size_t(e)]));
  return L;
}

// ---------------------------------------------------------------------------------------------------------------
// Dispatch

struct PendingDispatch::State {
  Communicator* comm = nullptr;
  const ExpertPlacement* placement = nullptr;
  int layer = 0;
  DispatchOptions options;
  int64_t hidden = 0, row_bytes = 0;
  DispatchLayout layout;
  DispatchHandle handle;
  std::vector<int64_t> tokens_from_rank;  // [R]
  std::vector<int64_t> recv_offsets;      // [R]
  CachedBytes send, recv;
  std::unique_ptr<CommRequest> request;
  bool finished = false;
};

PendingDispatch::PendingDispatch() = default;
PendingDispatch::PendingDispatch(PendingDispatch&&) noexcept = default;
PendingDispatch& PendingDispatch::operator=(PendingDispatch&&) noexcept = default;
PendingDispatch::~PendingDispatch() = default;

bool PendingDispatch::test() {
  DEEPMOE_CHECK(state_ && !state_->finished);
  return state_->request->test();
}

PendingDispatch moe_dispatch_start(Communicator& comm, const ExpertPlacement& placement, int layer, const Tensor& x,
                                   const Tensor& topk_idx, const Tensor& topk_weights, const DispatchOptions& options) {
  if (x.dtype() != DType::F32 || x.rank() != 2 || !x.is_contiguous())
    throw Error("dispatch: x must be a contiguous F32 [T, hidden] tensor, got " + x.shape_string());
  const int64_t T = x.dim(0), H = x.dim(1);
  if (topk_idx.rank() != 2 || topk_idx.dim(0) != T || !topk_idx.is_contiguous() ||
      (topk_idx.dtype() != DType::I32 && topk_idx.dtype() != DType::I64))
    throw Error("dispatch: topk_idx must be a contiguous I32/I64 [" + std::to_string(T) + ", k] tensor, got " +
                topk_idx.shape_string());
  const int K = int(topk_idx.dim(1));
  if (topk_weights.dtype() != DType::F32 || topk_weights.rank() != 2 || topk_weights.dim(0) != T ||
      topk_weights.dim(1) != K || !topk_weights.is_contiguous())
    throw Error("dispatch: topk_weights must be a contiguous F32 tensor shaped like topk_idx, got " +
                topk_weights.shape_string());
  if (placement.n_ranks() != comm.size())
    throw Error("dispatch: the placement is for " + std::to_string(placement.n_ranks()) + " ranks but the job has " +
                std::to_string(comm.size()));
  if (layer < 0 || layer >= placement.n_layers())
    throw Error("dispatch: layer " + std::to_string(layer) + " is not in the placement (" +
                std::to_string(placement.n_layers()) + " layers)");
  const int R = comm.size(), E = placement.n_logical(), me = comm.rank();

  auto st = std::make_unique<PendingDispatch::State>();
  st->comm = &comm;
  st->placement = &placement;
  st->layer = layer;
  st->options = options;
  st->hidden = H;
  st->row_bytes = payload_row_bytes(options.payload, H);

  // Layout step 1: global tokens per logical expert (needed for the replica split and the load statistics).
  const std::vector<int64_t> idx = read_topk_idx(topk_idx);
  std::vector<int64_t> local_counts(static_cast<size_t>(E), 0);
  for (size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] == -1) continue;
    if (idx[i] < -1 || idx[i] >= E)
      throw Error("dispatch: token " + std::to_string(int64_t(i) / std::max(K, 1)) + " routes to expert " +
                  std::to_string(idx[i]) + ", outside [0, " + std::to_string(E) + ")");
    ++local_counts[size_t(idx[i])];
  }
  local_counts.push_back(H);  // all ranks must agree on the hidden size
  local_counts.push_back(K);
  const std::vector<int64_t> gathered = comm.all_gather(local_counts);
  std::vector<int64_t> by_rank(size_t(R) * size_t(E));
  std::vector<int64_t> global(static_cast<size_t>(E), 0);
  for (int s = 0; s < R; ++s) {
    const int64_t* row = &gathered[size_t(s) * size_t(E + 2)];
    if (row[E] != H || row[E + 1] != K)
      throw Error("dispatch: rank " + std::to_string(s) + " has hidden size " + std::to_string(row[E]) + " and top-" +
                  std::to_string(row[E + 1]) + ", rank " + std::to_string(me) + " has " + std::to_string(H) +
                  " and top-" + std::to_string(K));
    for (int e = 0; e < E; ++e) {
      if (row[e] < 0 || row[e] > kMaxCount)
        throw Error("dispatch: rank " + std::to_string(s) + " announces an invalid count " + std::to_string(row[e]));
      by_rank[size_t(s) * size_t(E) + size_t(e)] = row[e];
      global[size_t(e)] += row[e];
    }
  }
  if (options.stats) options.stats->record(layer, global);

  // Layout step 2: replica choice, tokens per rank, token-in-rank mask.
  st->layout = compute_dispatch_layout(placement, layer, idx, T, K, me, by_rank, options.balance_replicas);
  const DispatchLayout& L = st->layout;

  // Tell every destination how many tokens and entries to expect.
  std::vector<int64_t> counts_out(size_t(2 * R)), counts_in(size_t(2 * R));
  for (int r = 0; r < R; ++r) {
    counts_out[size_t(2 * r)] = L.tokens_per_rank[size_t(r)];
    counts_out[size_t(2 * r + 1)] = L.entries_per_rank[size_t(r)];
  }
  {
    std::vector<int64_t> bytes(static_cast<size_t>(R), 16), ofs(static_cast<size_t>(R));
    for (int r = 0; r < R; ++r) ofs[size_t(r)] = 16 * r;
    comm.all_to_all_v(counts_out.data(), bytes, ofs, counts_in.data(), bytes, ofs)->wait();
  }
  std::vector<int64_t> recv_bytes(static_cast<size_t>(R)), recv_offsets(static_cast<size_t>(R));
  st->tokens_from_rank.assign(static_cast<size_t>(R), 0);
  st->handle.entries_from_rank.assign(static_cast<size_t>(R), 0);
  int64_t recv_total = 0;
  for (int s = 0; s < R; ++s) {
    const int64_t n_tok = counts_in[size_t(2 * s)], n_ent = counts_in[size_t(2 * s + 1)];
    if (n_tok < 0 || n_ent < n_tok || n_ent > n_tok * int64_t(K) || n_tok > kMaxCount)
      throw Error("dispatch: rank " + std::to_string(s) + " announces " + std::to_string(n_tok) + " tokens with " +
                  std::to_string(n_ent) + " expert entries (top-" + std::to_string(K) + "): inconsistent");
    st->tokens_from_rank[size_t(s)] = n_tok;
    st->handle.entries_from_rank[size_t(s)] = n_ent;
    recv_bytes[size_t(s)] = n_tok * st->row_bytes + round_up8(n_ent * kEntryBytes);
    recv_offsets[size_t(s)] = recv_total;
    recv_total += recv_bytes[size_t(s)];
  }
  st->recv_offsets = recv_offsets;

  // Pack: quantize each token once, then copy it into the section of every rank it visits.
  CachedBytes packed;
  packed.reset(size_t(T * st->row_bytes));  // every row written below
  parallel_for(options.pool, T, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      pack_row(x.data<float>() + t * H, H, options.payload, options.ue8m0_scales, packed.data() + t * st->row_bytes);
  });
  std::vector<int64_t> send_bytes(static_cast<size_t>(R)), send_offsets(static_cast<size_t>(R));
  int64_t send_total = 0;
  for (int r = 0; r < R; ++r) {
    send_bytes[size_t(r)] = L.tokens_per_rank[size_t(r)] * st->row_bytes + round_up8(L.entries_per_rank[size_t(r)] * kEntryBytes);
    send_offsets[size_t(r)] = send_total;
    send_total += send_bytes[size_t(r)];
  }
  st->send.reset_zeroed(static_cast<size_t>(send_total));  // zero: the entry sections' padding is sent too
  std::vector<int64_t> rows_written(static_cast<size_t>(R), 0), entries_written(static_cast<size_t>(R), 0);
  std::vector<int32_t> msg_index(static_cast<size_t>(R));
  std::vector<std::vector<int32_t>> pairs_to(static_cast<size_t>(R));
  const float* w = topk_weights.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) {
      if (!L.token_in_rank[size_t(t) * size_t(R) + size_t(r)]) continue;
      msg_index[size_t(r)] = int32_t(rows_written[size_t(r)]);
      std::memcpy(st->send.data() + send_offsets[size_t(r)] + rows_written[size_t(r)]++ * st->row_bytes,
                  packed.data() + t * st->row_bytes, size_t(st->row_bytes));
    }
    for (int j = 0; j < K; ++j) {
      const int slot = L.slot_of_pair[size_t(t * K + j)];
      if (slot < 0) continue;
      const int r = placement.rank_of_slot(slot);
      const int32_t entry[2] = {msg_index[size_t(r)], int32_t(placement.local_index_of_slot(slot))};
      char* dst = st->send.data() + send_offsets[size_t(r)] + L.tokens_per_rank[size_t(r)] * st->row_bytes +
                  entries_written[size_t(r)]++ * kEntryBytes;
      std::memcpy(dst, entry, 8);
      std::memcpy(dst + 8, &w[t * K + j], 4);
      pairs_to[size_t(r)].push_back(int32_t(t * K + j));
    }
  }
  DispatchHandle& h = st->handle;
  h.layer = layer;
  h.n_tokens = T;
  h.topk = K;
  h.hidden = H;
  h.combine_payload = options.combine_payload;
  h.pool = options.pool;
  h.entries_to_rank = L.entries_per_rank;
  for (auto& p : pairs_to) h.pair_of_entry.insert(h.pair_of_entry.end(), p.begin(), p.end());

  st->recv.reset(static_cast<size_t>(recv_total));  // all_to_all_v fills it
  st->request = comm.all_to_all_v(st->send.data(), send_bytes, send_offsets, st->recv.data(), recv_bytes, recv_offsets);
  PendingDispatch pending;
  pending.state_ = std::move(st);
  return pending;
}

DispatchResult PendingDispatch::finish() {
  DEEPMOE_CHECK(state_ && !state_->finished, "finish() called twice or on an empty pending dispatch");
  State& st = *state_;
  st.request->wait();
  st.finished = true;
  const int R = st.comm->size(), me = st.comm->rank();
  const int S = st.placement->slots_per_rank();
  const int64_t H = st.hidden;
  DispatchResult out;
  out.handle = std::move(st.handle);
  DispatchHandle& h = out.handle;

  // Validate every received entry and group the entries by local slot (stable: source rank, then arrival).
  const std::vector<int64_t> entry_ofs = exclusive_offsets(h.entries_from_rank);
  const int64_t n_entries = entry_ofs.back();
  std::vector<int32_t> slot_of_entry(static_cast<size_t>(n_entries)), token_of_entry(static_cast<size_t>(n_entries));
  std::vector<int> source_of_entry(static_cast<size_t>(n_entries));
  std::vector<float> weight_of_entry(static_cast<size_t>(n_entries));
  out.row_offsets.assign(size_t(S) + 1, 0);
  for (int s = 0; s < R; ++s) {
    const char* entries = st.recv.data() + st.recv_offsets[size_t(s)] + st.tokens_from_rank[size_t(s)] * st.row_bytes;
    for (int64_t i = 0; i < h.entries_from_rank[size_t(s)]; ++i) {
      int32_t e[2];
      std::memcpy(e, entries + i * kEntryBytes, 8);
      if (e[0] < 0 || e[0] >= st.tokens_from_rank[size_t(s)] || e[1] < 0 || e[1] >= S)
        throw Error("dispatch: rank " + std::to_string(me) + " received an invalid entry from rank " +
                    std::to_string(s) + " (token " + std::to_string(e[0]) + " of " +
                    std::to_string(st.tokens_from_rank[size_t(s)]) + ", local slot " + std::to_string(e[1]) + " of " +
                    std::to_string(S) + ")");
      const size_t k = size_t(entry_ofs[size_t(s)] + i);
      token_of_entry[k] = e[0];
      slot_of_entry[k] = e[1];
      source_of_entry[k] = s;
      std::memcpy(&weight_of_entry[k], entries + i * kEntryBytes + 8, 4);
      ++out.row_offsets[size_t(e[1]) + 1];
    }
  }
  for (int s = 0; s < S; ++s) out.row_offsets[size_t(s) + 1] += out.row_offsets[size_t(s)];
  std::vector<int64_t> fill(out.row_offsets.begin(), out.row_offsets.end() - 1);
  h.row_of_entry.resize(static_cast<size_t>(n_entries));
  h.weight_of_row.resize(static_cast<size_t>(n_entries));
  for (int64_t k = 0; k < n_entries; ++k) {
    const int64_t row = fill[size_t(slot_of_entry[size_t(k)])]++;
    h.row_of_entry[size_t(k)] = row;
    h.weight_of_row[size_t(row)] = weight_of_entry[size_t(k)];
  }
  out.row_weights = h.weight_of_row;

  const bool fp8 = st.options.payload == DispatchPayload::FP8;
  out.x = Tensor::zeros(DType::F32, {n_entries, H});
  if (fp8) {
    out.x_fp8 = Tensor::zeros(DType::F8_E4M3, {n_entries, H});
    out.x_scales = Tensor::zeros(DType::F32, {n_entries, n_tiles(H)});
  }
  parallel_for(st.options.pool, n_entries, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int s = source_of_entry[size_t(k)];
      const int64_t row = h.row_of_entry[size_t(k)];
      const char* src = st.recv.data() + st.recv_offsets[size_t(s)] + token_of_entry[size_t(k)] * st.row_bytes;
      unpack_row(src, H, st.options.payload, out.x.data<float>() + row * H,
                 fp8 ? out.x_fp8.data<uint8_t>() + row * H : nullptr,
                 fp8 ? out.x_scales.data<float>() + row * n_tiles(H) : nullptr);
    }
  }, copy_grain(H));  // a decode step moves a few rows (top-k of one token)
  out.layout = std::move(st.layout);
  st.send = {};
  st.recv = CachedBytes();
  return out;
}

DispatchResult moe_dispatch(Communicator& comm, const ExpertPlacement& placement, int layer, const Tensor& x,
                            const Tensor& topk_idx, const Tensor& topk_weights, const DispatchOptions& options) {
  return moe_dispatch_start(comm, placement, layer, x, topk_idx, topk_weights, options).finish();
}

// ---------------------------------------------------------------------------------------------------------------
// Combine

struct PendingCombine::State {
  Communicator* comm = nullptr;
  const DispatchHandle* handle = nullptr;
  int64_t row_bytes = 0;
  std::vector<int64_t> recv_offsets;
  CachedBytes send, recv;
  std::unique_ptr<CommRequest> request;
  bool finished = false;
};

PendingCombine::PendingCombine() = default;
PendingCombine::PendingCombine(PendingCombine&&) noexcept = default;
PendingCombine& PendingCombine::operator=(PendingCombine&&) noexcept = default;
PendingCombine::~PendingCombine() = default;

bool PendingCombine::test() {
  DEEPMOE_CHECK(state_ && !state_->finished);
  return state_->request->test();
}

PendingCombine moe_combine_start(Communicator& comm, const DispatchHandle& h, const Tensor& expert_out) {
  const int64_t rows = int64_t(h.weight_of_row.size()), H = h.hidden;
  if (expert_out.dtype() != DType::F32 || expert_out.rank() != 2 || expert_out.dim(0) != rows ||
      expert_out.dim(1) != H || !expert_out.is_contiguous())
    throw Error("combine: expert_out must be a contiguous F32 [" + std::to_string(rows) + ", " + std::to_string(H) +
                "] tensor, got " + expert_out.shape_string());
  const int R = comm.size();
  DEEPMOE_CHECK(h.entries_from_rank.size() == size_t(R) && h.entries_to_rank.size() == size_t(R));
  auto st = std::make_unique<PendingCombine::State>();
  st->comm = &comm;
  st->handle = &h;
  st->row_bytes = combine_row_bytes(h.combine_payload, H);
  const std::vector<int64_t> entry_ofs = exclusive_offsets(h.entries_from_rank);
  std::vector<int64_t> send_bytes(static_cast<size_t>(R)), send_offsets(static_cast<size_t>(R)), recv_bytes(static_cast<size_t>(R)), recv_offsets(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    send_bytes[size_t(r)] = h.entries_from_rank[size_t(r)] * st->row_bytes;
    send_offsets[size_t(r)] = entry_ofs[size_t(r)] * st->row_bytes;
    recv_bytes[size_t(r)] = h.entries_to_rank[size_t(r)] * st->row_bytes;
    recv_offsets[size_t(r)] = (r == 0 ? 0 : recv_offsets[size_t(r - 1)] + recv_bytes[size_t(r - 1)]);
  }
  st->recv_offsets = recv_offsets;
  // Entry k (arrival order) goes back as w · out[row]: the top-k weight is applied on the expert side.
  st->send.reset(size_t(entry_ofs.back() * st->row_bytes));  // every entry's row written below
  const bool bf16 = h.combine_payload == CombinePayload::BF16;
  parallel_for(h.pool, entry_ofs.back(), [&](int64_t begin, int64_t end) {
    std::vector<float> tmp(static_cast<size_t>(H));
    for (int64_t k = begin; k < end; ++k) {
      const int64_t row = h.row_of_entry[size_t(k)];
      const float w = h.weight_of_row[size_t(row)];
      const float* src = expert_out.data<float>() + row * H;
      for (int64_t i = 0; i < H; ++i) tmp[size_t(i)] = w * src[i];
      char* dst = st->send.data() + k * st->row_bytes;
      if (bf16)
        convert_f32_to_bf16(tmp.data(), reinterpret_cast<uint16_t*>(dst), size_t(H));
      else
        std::memcpy(dst, tmp.data(), size_t(H) * 4);
    }
  }, copy_grain(H));
  st->recv.reset(size_t((recv_offsets.back() + recv_bytes.back())));  // all_to_all_v fills it
  st->request = comm.all_to_all_v(st->send.data(), send_bytes, send_offsets, st->recv.data(), recv_bytes, recv_offsets);
  PendingCombine pending;
  pending.state_ = std::move(st);
  return pending;
}

Tensor PendingCombine::finish() {
  DEEPMOE_CHECK(state_ && !state_->finished, "finish() called twice or on an empty pending combine");
  State& st = *state_;
  st.request->wait();
  st.finished = true;
  const DispatchHandle& h = *st.handle;
  const int64_t T = h.n_tokens, H = h.hidden;
  const int K = h.topk;
  // Entries come back destination-major, in the order they were sent; index them by (token, k).
  std::vector<int64_t> entry_of_pair(size_t(T * K), -1);
  for (size_t i = 0; i < h.pair_of_entry.size(); ++i) entry_of_pair[size_t(h.pair_of_entry[i])] = int64_t(i);
  Tensor y = Tensor::zeros(DType::F32, {T, H});
  const bool bf16 = h.combine_payload == CombinePayload::BF16;
  parallel_for(h.pool, T, [&](int64_t begin, int64_t end) {
    std::vector<float> tmp(static_cast<size_t>(H));
    for (int64_t t = begin; t < end; ++t) {
      float* dst = y.data<float>() + t * H;
      for (int j = 0; j < K; ++j) {  // fixed k order: bitwise identical for any rank count
        const int64_t i = entry_of_pair[size_t(t * K + j)];
        if (i < 0) continue;
        const char* src = st.recv.data() + i * st.row_bytes;
        if (bf16)
          convert_bf16_to_f32(reinterpret_cast<const uint16_t*>(src), tmp.data(), size_t(H));
        else
          std::memcpy(tmp.data(), src, size_t(H) * 4);
        for (int64_t c = 0; c < H; ++c) dst[c] += tmp[size_t(c)];
      }
    }
  });
  st.send = {};
  st.recv = CachedBytes();
  return y;
}

Tensor moe_combine(Communicator& comm, const DispatchHandle& handle, const Tensor& expert_out) {
  return moe_combine_start(comm, handle, expert_out).finish();
}

}  // namespace deepmoe
