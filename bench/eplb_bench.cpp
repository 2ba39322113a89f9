// Expert load balance under Zipf-skewed routing: V3's shape — 256 routed experts, top-8, 8
// groups — on 8 and 32 simulated ranks. For s = 1.0 and 1.5 it reports the max/mean per-rank load (routed
// (token, expert) pairs received per rank) of a fresh batch:
//   before:    no redundancy, experts 0..255 contiguous over the ranks;
//   eplb:      EPLB (hierarchical, 8 ranks per node) with 32 redundant experts, planned from a history batch of
//              the same distribution, each replica taking 1/logcnt of its expert's load (EPLB's model);
//   balanced:  the same placement with the per-token replica split of dispatch (replica_quotas) on the batch.
// Routing: expert popularity ∝ 1/rank^s over a random permutation of experts; each token takes 8 distinct
// experts drawn without replacement by popularity (Gumbel top-k), either freely or limited to the 4 best of 8
// groups as V3's gate does.
// One JSON line per case. Not run by the tests.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "parallel/eplb.h"
#include "parallel/expert_placement.h"
#include "parallel/moe_dispatch.h"

using namespace deepmoe;

namespace {

constexpr int kExperts = 256, kTopk = 8, kGroups = 8, kRedundant = 32, kRanksPerNode = 8;

// Tokens per expert of a batch of n_tokens routed tokens. Each token's expert keys are log-popularity plus Gumbel
// noise (so top-k by key is sampling without replacement by popularity). group_limited applies V3's gate
// (reference §1.6): group score = sum of the top-2 sigmoid scores in each of the 8 groups, keep the top 4 groups,
// then the top 8 experts among them.
std::vector<int64_t> route_batch(const std::vector<double>& log_p, int64_t n_tokens, bool group_limited,
                                 std::mt19937_64& rng) {
  constexpr int kGroupSize = kExperts / kGroups, kTopkGroups = 4;
  std::vector<int64_t> counts(kExperts, 0);
  std::uniform_real_distribution<double> u(1e-300, 1.0);
  std::vector<std::pair<double, int>> keys(kExperts), groups(kGroups);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int e = 0; e < kExperts; ++e) keys[size_t(e)] = {log_p[size_t(e)] - std::log(-std::log(u(rng))), e};
    if (group_limited) {
      for (int g = 0; g < kGroups; ++g) {
        double a = -1, b = -1;  // top-2 sigmoid scores of the group
        for (int i = 0; i < kGroupSize; ++i) {
          const double sc = 1.0 / (1.0 + std::exp(-keys[size_t(g * kGroupSize + i)].first));
          if (sc > a) b = a, a = sc;
          else if (sc > b) b = sc;
        }
        groups[size_t(g)] = {a + b, g};
      }
      std::partial_sort(groups.begin(), groups.begin() + kTopkGroups, groups.end(), std::greater<>());
      std::vector<bool> keep(kGroups, false);
      for (int i = 0; i < kTopkGroups; ++i) keep[size_t(groups[size_t(i)].second)] = true;
      for (int e = 0; e < kExperts; ++e)
        if (!keep[size_t(e / kGroupSize)]) keys[size_t(e)].first = -INFINITY;
    }
    std::partial_sort(keys.begin(), keys.begin() + kTopk, keys.end(), std::greater<>());
    for (int j = 0; j < kTopk; ++j) ++counts[size_t(keys[size_t(j)].second)];
  }
  return counts;
}

double max_over_mean(const std::vector<double>& load) {
  double mean = std::accumulate(load.begin(), load.end(), 0.0) / double(load.size());
  return *std::max_element(load.begin(), load.end()) / mean;
}

}  // namespace

int main() {
  for (int ranks : {8, 32}) {
    for (double s : {1.0, 1.5}) {
     for (bool group_limited : {false, true}) {
      std::mt19937_64 rng(uint64_t(ranks * 1000 + int(s * 10)));
      std::vector<int> perm(kExperts);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::vector<double> log_p(kExperts);
      for (int r = 0; r < kExperts; ++r) log_p[size_t(perm[size_t(r)])] = -s * std::log(double(r + 1));
      const int64_t tokens = int64_t(ranks) * 4096;
      const std::vector<int64_t> history = route_batch(log_p, tokens, group_limited, rng);
      const std::vector<int64_t> batch = route_batch(log_p, tokens, group_limited, rng);

      // Before: expert e on rank ⌊e·ranks/256⌋, no replicas.
      std::vector<float> batch_f(batch.begin(), batch.end());
      const double before = max_over_mean(eplb::gpu_loads_without_eplb(batch_f, ranks));

      // Hierarchical (replicas stay within a node of 8 ranks) and global (EPLB's fallback: one group, one node).
      for (const char* policy : {"hierarchical", "global"}) {
        const bool global = policy[0] == 'g';
        eplb::Matrix weight = {std::vector<float>(history.begin(), history.end())};
        auto t0 = std::chrono::steady_clock::now();
        eplb::Result plan = global ? eplb::rebalance_experts_hierarchical(weight, kExperts + kRedundant, 1, 1, ranks)
                                   : eplb::rebalance_experts(weight, kExperts + kRedundant, kGroups,
                                                             std::max(1, ranks / kRanksPerNode), ranks);
        const double eplb_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        const double after_eplb = max_over_mean(eplb::gpu_loads(batch_f, plan.phy2log[0], plan.logcnt[0], ranks));
        const double eplb_on_history =
            max_over_mean(eplb::gpu_loads(weight[0], plan.phy2log[0], plan.logcnt[0], ranks));

        // Per-token replica balancing on the batch (what dispatch does on the fly).
        auto placement = ExpertPlacement::from_phy2log(plan.phy2log, kExperts, ranks);
        t0 = std::chrono::steady_clock::now();
        std::vector<int64_t> quota;
        const int reps = 100;
        for (int i = 0; i < reps; ++i) quota = replica_quotas(placement, 0, batch, true);
        const double quota_us =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
        std::vector<double> load(static_cast<size_t>(ranks), 0.0);
        for (int p = 0; p < placement.n_physical(); ++p)
          load[size_t(placement.rank_of_slot(p))] += double(quota[size_t(p)]);
        const double balanced = max_over_mean(load);

        std::printf(
            "{\"bench\":\"eplb_zipf\",\"experts\":%d,\"topk\":%d,\"groups\":%d,\"ranks\":%d,\"zipf_s\":%.1f,"
            "\"routing\":\"%s\",\"tokens\":%lld,\"redundant\":%d,\"policy\":\"%s\",\"max_over_mean_before\":%.4f,"
            "\"max_over_mean_eplb\":%.4f,\"max_over_mean_eplb_on_history\":%.4f,"
            "\"max_over_mean_eplb_plus_token_balancing\":%.4f,\"eplb_ms\":%.3f,\"replica_split_us\":%.2f}\n",
            kExperts, kTopk, kGroups, ranks, s, group_limited ? "top4_groups" : "free", (long long)tokens, kRedundant, policy, before, after_eplb,
            eplb_on_history, balanced, eplb_ms, quota_us);
      }
    }
  }
    }
  return 0;
}
