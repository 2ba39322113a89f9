// Run under `mpirun -np N`: every rank routes its slice of one deterministic batch through dispatch → toy
// experts → combine over MPI and checks its rows against the plain-loop reference (bitwise), for each payload,
// with and without redundant experts; identity experts also meet DeepEP's calc_diff criterion. A failing rank
// exits non-zero, which fails the mpirun.
#include <cstdio>
#include <cstring>

#include "../parallel/dispatch_test_util.h"
#include "core/error.h"
#include "parallel/communicator.h"

using namespace deepmoe;
using namespace deepmoe::testing;

namespace {

int check(Communicator& comm, DispatchPayload payload, int redundant, bool identity) {
  constexpr int kExperts = 16, kTopk = 4;
  RoutedBatch b = make_routed_batch(67, 200, kExperts, kTopk, 23);
  auto placement = ExpertPlacement::uniform(2, kExperts, comm.size(), redundant);
  auto [begin, end] = rank_token_range(b.n_tokens, comm.rank(), comm.size());
  auto s = slice_batch(b, begin, end);
  DispatchOptions o;
  o.payload = payload;
  DispatchResult d = moe_dispatch(comm, placement, 1, s.x, s.idx, s.weights, o);
  // Every received row count is accounted for: the rows of all ranks add up to the routed pairs.
  std::vector<int64_t> mine = {d.x.dim(0)};
  int64_t rows = 0;
  for (int64_t r : comm.all_gather(mine)) rows += r;
  int64_t pairs = 0;
  for (int64_t e : b.idx) pairs += e >= 0;
  Tensor out = run_toy_experts(d, placement, 1, comm.rank(), identity);
  Tensor y = moe_combine(comm, d.handle, out);
  const std::vector<float> ref = reference_moe(b, payload, identity);
  int failures = 0;
  if (rows != pairs) {
    std::fprintf(stderr, "rank %d: %lld rows received in total, %lld routed pairs\n", comm.rank(), (long long)rows,
                 (long long)pairs);
    ++failures;
  }
  if (y.nbytes() && std::memcmp(y.data<float>(), ref.data() + begin * b.hidden, y.nbytes()) != 0) {
    std::fprintf(stderr, "rank %d: combine differs from the reference (payload %d, redundant %d)\n", comm.rank(),
                 int(payload), redundant);
    ++failures;
  }
  if (identity && end > begin) {
    std::vector<double> expect(size_t((end - begin) * b.hidden));
    for (int64_t t = begin; t < end; ++t) {
      double w = 0;
      for (int j = 0; j < kTopk; ++j)
        if (b.idx[size_t(t * kTopk + j)] >= 0) w += b.weights[size_t(t * kTopk + j)];
      for (int64_t i = 0; i < b.hidden; ++i)
        expect[size_t((t - begin) * b.hidden + i)] = double(b.x[size_t(t * b.hidden + i)]) * w;
    }
    const double diff = calc_diff(y.data<float>(), expect.data(), expect.size());
    const double limit = payload == DispatchPayload::FP8 ? 9e-4 : 5e-6;
    if (!(diff < limit)) {
      std::fprintf(stderr, "rank %d: calc_diff %.3g >= %.3g\n", comm.rank(), diff, limit);
      ++failures;
    }
  }
  return failures;
}

// Raw all-to-all(v) with message lengths that make some ranks move 64- or 8-byte units and others single bytes.
int raw_exchange(Communicator& comm) {
  const int R = comm.size(), me = comm.rank();
  auto len = [](int s, int d) -> int64_t { return s == 1 ? 8 * (s + d) + 3 : 64 * (1 + s + d); };
  auto byte = [](int s, int d, int64_t i) { return char((s * 31 + d * 7 + i) & 0xFF); };
  std::vector<int64_t> sb(R), so(R), rb(R), ro(R);
  int64_t st = 0, rt = 0;
  for (int p = 0; p < R; ++p) {
    sb[p] = len(me, p), so[p] = st, st += sb[p];
    rb[p] = len(p, me), ro[p] = rt, rt += rb[p];
  }
  std::vector<char> send(static_cast<size_t>(st)), recv(static_cast<size_t>(rt));
  for (int p = 0; p < R; ++p)
    for (int64_t i = 0; i < sb[p]; ++i) send[size_t(so[p] + i)] = byte(me, p, i);
  comm.all_to_all_v(send.data(), sb, so, recv.data(), rb, ro)->wait();
  for (int p = 0; p < R; ++p)
    for (int64_t i = 0; i < rb[p]; ++i)
      if (recv[size_t(ro[p] + i)] != byte(p, me, i)) {
        std::fprintf(stderr, "rank %d: byte %lld from rank %d is wrong\n", me, (long long)i, p);
        return 1;
      }
  return 0;
}

}  // namespace

int main() {
  auto comm = make_world_communicator();
  int failures = 0;
  try {
    failures += raw_exchange(*comm);
    for (auto payload : {DispatchPayload::F32, DispatchPayload::BF16, DispatchPayload::FP8})
      for (int redundant : {0, 4})
        for (bool identity : {true, false}) failures += check(*comm, payload, redundant, identity);
  } catch (const Error& e) {
    comm->abort(e.what());
  }
  std::printf("rank %d of %d (%s): %s\n", comm->rank(), comm->size(), comm->kind().c_str(),
              failures ? "FAILED" : "all dispatch/combine checks passed");
  std::vector<int64_t> f = {failures};
  int64_t total = 0;
  for (int64_t v : comm->all_gather(f)) total += v;
  return total == 0 ? 0 : 1;
}
