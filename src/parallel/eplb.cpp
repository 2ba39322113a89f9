#include "parallel/eplb.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace deepmoe::eplb {
namespace {

// Inverse of a permutation row: inv[perm[i]] = i (torch scatter_ of arange).
std::vector<int> inverse(const std::vector<int>& perm) {
  std::vector<int> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[static_cast<size_t>(perm[i])] = int(i);
  return inv;
}

void require(bool ok, const std::string& field, const std::string& message) {
  if (!ok) throw Error("eplb: " + message, ErrorContext{"", "", field});
}

}  // namespace

void balanced_packing(const Matrix& weight, int num_packs, IntMatrix& pack_index, IntMatrix& rank_in_pack) {
  const size_t rows = weight.size();
  const int n = rows ? int(weight[0].size()) : 0;
  DEEPMOE_CHECK(num_packs > 0 && n % num_packs == 0, "items must divide evenly into packs");
  const int per_pack = n / num_packs;
  pack_index.assign(rows, std::vector<int>(static_cast<size_t>(n), -1));
  rank_in_pack.assign(rows, std::vector<int>(static_cast<size_t>(n), -1));
  for (size_t i = 0; i < rows; ++i) {
    if (per_pack == 1) {
      std::iota(pack_index[i].begin(), pack_index[i].end(), 0);
      std::fill(rank_in_pack[i].begin(), rank_in_pack[i].end(), 0);
      continue;
    }
    std::vector<int> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return weight[i][size_t(a)] > weight[i][size_t(b)]; });
    std::vector<float> pack_weight(static_cast<size_t>(num_packs), 0.0f);
    std::vector<int> pack_items(static_cast<size_t>(num_packs), 0);
    for (int item : order) {
      int best = -1;
      for (int p = 0; p < num_packs; ++p)
        if (pack_items[size_t(p)] < per_pack && (best < 0 || pack_weight[size_t(p)] < pack_weight[size_t(best)]))
          best = p;
      pack_index[i][size_t(item)] = best;
      rank_in_pack[i][size_t(item)] = pack_items[size_t(best)]++;
      pack_weight[size_t(best)] += weight[i][size_t(item)];
    }
  }
}

void replicate_experts(const Matrix& weight, int num_phy, IntMatrix& phy2log, IntMatrix& rank, IntMatrix& logcnt) {
  const size_t rows = weight.size();
  const int num_log = rows ? int(weight[0].size()) : 0;
  DEEPMOE_CHECK(num_phy >= num_log, "fewer physical slots than logical experts");
  phy2log.assign(rows, std::vector<int>(static_cast<size_t>(num_phy)));
  rank.assign(rows, std::vector<int>(static_cast<size_t>(num_phy), 0));
  logcnt.assign(rows, std::vector<int>(static_cast<size_t>(num_log), 1));
  for (size_t r = 0; r < rows; ++r) {
    std::iota(phy2log[r].begin(), phy2log[r].end(), 0);
    for (int i = num_log; i < num_phy; ++i) {
      // argmax of weight / logcnt in float32, first index on ties (torch max(dim).indices).
      int best = 0;
      float best_v = weight[r][0] / float(logcnt[r][0]);
      for (int e = 1; e < num_log; ++e) {
        const float v = weight[r][size_t(e)] / float(logcnt[r][size_t(e)]);
        if (v > best_v) {
          best_v = v;
          best = e;
        }
      }
      phy2log[r][size_t(i)] = best;
      rank[r][size_t(i)] = logcnt[r][size_t(best)]++;
    }
  }
}

Result rebalance_experts_hierarchical(const Matrix& weight, int num_physical, int num_groups, int num_nodes,
                                      int num_gpus) {
  const size_t L = weight.size();
  const int E = int(weight[0].size());
  require(num_groups > 0 && E % num_groups == 0, "num_groups",
          std::to_string(E) + " experts do not divide into " + std::to_string(num_groups) + " groups");
  const int group_size = E / num_groups;
  require(num_nodes > 0 && num_groups % num_nodes == 0, "num_nodes",
          std::to_string(num_groups) + " groups do not divide over " + std::to_string(num_nodes) + " nodes");
  const int groups_per_node = num_groups / num_nodes;
  require(num_gpus > 0 && num_gpus % num_nodes == 0, "num_gpus",
          std::to_string(num_gpus) + " GPUs do not divide over " + std::to_string(num_nodes) + " nodes");
  require(num_physical % num_gpus == 0, "num_replicas",
          std::to_string(num_physical) + " replicas do not divide over " + std::to_string(num_gpus) + " GPUs");
  require(num_physical >= E, "num_replicas",
          std::to_string(num_physical) + " replicas cannot hold " + std::to_string(E) + " experts");
  const int phy_per_gpu = num_physical / num_gpus;
  const int log_per_node = E / num_nodes, phy_per_node = num_physical / num_nodes;
  require(phy_per_node >= log_per_node, "num_replicas", "fewer replicas than experts on a node");

  // Step 1: pack groups onto nodes.
  Matrix tokens_per_group(L, std::vector<float>(static_cast<size_t>(num_groups), 0.0f));
  for (size_t l = 0; l < L; ++l)
    for (int g = 0; g < num_groups; ++g)
      for (int j = 0; j < group_size; ++j) tokens_per_group[l][size_t(g)] += weight[l][size_t(g * group_size + j)];
  IntMatrix group_pack, group_rank;
  balanced_packing(tokens_per_group, num_nodes, group_pack, group_rank);
  IntMatrix log2mlog(L, std::vector<int>(static_cast<size_t>(E))), mlog2log(L);
  for (size_t l = 0; l < L; ++l) {
    for (int g = 0; g < num_groups; ++g)
      for (int j = 0; j < group_size; ++j)
        log2mlog[l][size_t(g * group_size + j)] =
            (group_pack[l][size_t(g)] * groups_per_node + group_rank[l][size_t(g)]) * group_size + j;
    mlog2log[l] = inverse(log2mlog[l]);
  }

  // Step 2: replicas within each node; rows are (layer, node).
  Matrix tokens_per_mlog(L * size_t(num_nodes), std::vector<float>(static_cast<size_t>(log_per_node)));
  for (size_t l = 0; l < L; ++l)
    for (int m = 0; m < E; ++m)
      tokens_per_mlog[l * size_t(num_nodes) + size_t(m / log_per_node)][size_t(m % log_per_node)] =
          weight[l][size_t(mlog2log[l][size_t(m)])];
  IntMatrix phy2mlog, phyrank, mlogcnt;
  replicate_experts(tokens_per_mlog, phy_per_node, phy2mlog, phyrank, mlogcnt);

  // Step 3: pack the node's physical experts onto its GPUs.
  Matrix tokens_per_phy(tokens_per_mlog.size(), std::vector<float>(static_cast<size_t>(phy_per_node)));
  for (size_t row = 0; row < tokens_per_mlog.size(); ++row)
    for (int p = 0; p < phy_per_node; ++p) {
      const int m = phy2mlog[row][size_t(p)];
      tokens_per_phy[row][size_t(p)] = tokens_per_mlog[row][size_t(m)] / float(mlogcnt[row][size_t(m)]);
    }
  IntMatrix pack_index, rank_in_pack;
  balanced_packing(tokens_per_phy, num_gpus / num_nodes, pack_index, rank_in_pack);

  Result out;
  out.phy2log.assign(L, std::vector<int>(static_cast<size_t>(num_physical)));
  out.phyrank.assign(L, std::vector<int>(static_cast<size_t>(num_physical)));
  out.logcnt.assign(L, std::vector<int>(static_cast<size_t>(E)));
  for (size_t l = 0; l < L; ++l) {
    for (int n = 0; n < num_nodes; ++n) {
      const size_t row = l * size_t(num_nodes) + size_t(n);
      std::vector<int> phy2pphy(static_cast<size_t>(phy_per_node));
      for (int p = 0; p < phy_per_node; ++p)
        phy2pphy[size_t(p)] = pack_index[row][size_t(p)] * phy_per_gpu + rank_in_pack[row][size_t(p)];
      const std::vector<int> pphy2phy = inverse(phy2pphy);
      for (int q = 0; q < phy_per_node; ++q) {
        const int p = pphy2phy[size_t(q)];
        const int mlog = phy2mlog[row][size_t(p)] + n * log_per_node;
        out.phy2log[l][size_t(n * phy_per_node + q)] = mlog2log[l][size_t(mlog)];
        out.phyrank[l][size_t(n * phy_per_node + q)] = phyrank[row][size_t(p)];
      }
    }
    for (int e = 0; e < E; ++e) {
      const int m = log2mlog[l][size_t(e)];
      out.logcnt[l][size_t(e)] = mlogcnt[l * size_t(num_nodes) + size_t(m / log_per_node)][size_t(m % log_per_node)];
    }
  }
  return out;
}

Result rebalance_experts(const Matrix& weight, int num_replicas, int num_groups, int num_nodes, int num_gpus) {
  require(!weight.empty() && !weight[0].empty(), "weight", "needs at least one layer with at least one expert");
  for (size_t l = 0; l < weight.size(); ++l) {
    require(weight[l].size() == weight[0].size(), "weight",
            "layer " + std::to_string(l) + " has " + std::to_string(weight[l].size()) + " experts, layer 0 has " +
                std::to_string(weight[0].size()));
    for (float w : weight[l])
      require(std::isfinite(w) && w >= 0, "weight", "loads must be finite and non-negative");
  }
  require(num_replicas > 0, "num_replicas", "must be positive");
  require(num_groups > 0, "num_groups", "must be positive");
  require(num_nodes > 0, "num_nodes", "must be positive");
  require(num_gpus > 0, "num_gpus", "must be positive");
  const bool hierarchical = num_groups % num_nodes == 0;
  Result out = hierarchical ? rebalance_experts_hierarchical(weight, num_replicas, num_groups, num_nodes, num_gpus)
                            : rebalance_experts_hierarchical(weight, num_replicas, 1, 1, num_gpus);
  out.policy = hierarchical ? "hierarchical" : "global";
  int max_cnt = 0;
  for (auto& row : out.logcnt) max_cnt = std::max(max_cnt, *std::max_element(row.begin(), row.end()));
  const size_t E = weight[0].size();
  out.log2phy.assign(weight.size(), IntMatrix(E, std::vector<int>(static_cast<size_t>(max_cnt), -1)));
  for (size_t l = 0; l < weight.size(); ++l)
    for (int p = 0; p < num_replicas; ++p)
      out.log2phy[l][size_t(out.phy2log[l][size_t(p)])][size_t(out.phyrank[l][size_t(p)])] = p;
  return out;
}

std::vector<double> gpu_loads(const std::vector<float>& weight, const std::vector<int>& phy2log,
                              const std::vector<int>& logcnt, int num_gpus) {
  DEEPMOE_CHECK(num_gpus > 0 && phy2log.size() % size_t(num_gpus) == 0);
  const size_t per_gpu = phy2log.size() / size_t(num_gpus);
  std::vector<double> load(static_cast<size_t>(num_gpus), 0.0);
  for (size_t i = 0; i < phy2log.size(); ++i) {
    const size_t e = size_t(phy2log[i]);
    load[i / per_gpu] += double(weight[e]) / double(logcnt[e]);
  }
  return load;
}

std::vector<double> gpu_loads_without_eplb(const std::vector<float>& weight, int num_gpus) {
  std::vector<double> load(static_cast<size_t>(num_gpus), 0.0);
  for (size_t e = 0; e < weight.size(); ++e) load[e * size_t(num_gpus) / weight.size()] += double(weight[e]);
  return load;
}

}  // namespace deepmoe::eplb
