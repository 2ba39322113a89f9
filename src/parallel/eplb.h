// EPLB, the expert-parallelism load balancer of DeepSeek-V3 (deepseek-ai/EPLB eplb.py; reference
// deepseek_v3_system.md §3), re-implemented operation for operation: float32 loads like the original's
// weight.float(), stable descending sorts, first index on ties. Given the estimated load per logical expert
// per layer, it chooses which experts get redundant replicas and packs the physical replicas onto GPUs (ranks)
// so that the heaviest rank is as light as possible.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace deepmoe::eplb {

using Matrix = std::vector<std::vector<float>>;  // [rows][cols]
using IntMatrix = std::vector<std::vector<int>>;

// balanced_packing: n/m items per pack; per row, items in descending weight order each go to the lightest pack
// that is not full (ties → lowest pack index). Outputs pack_index and rank_in_pack, shaped like weight.
void balanced_packing(const Matrix& weight, int num_packs, IntMatrix& pack_index, IntMatrix& rank_in_pack);

// replicate_experts: phy2log starts as arange(num_log); each extra slot replicates argmax(weight / logcnt).
// Outputs phy2log [rows][num_phy], rank (replica number of each slot) [rows][num_phy], logcnt [rows][num_log].
void replicate_experts(const Matrix& weight, int num_phy, IntMatrix& phy2log, IntMatrix& rank, IntMatrix& logcnt);

struct Result {
  std::string policy;                              // "hierarchical" or "global"
  IntMatrix phy2log;                               // [layers][num_replicas]
  IntMatrix phyrank;                               // [layers][num_replicas] replica number of each slot
  IntMatrix logcnt;                                // [layers][num_logical]
  std::vector<IntMatrix> log2phy;                  // [layers][num_logical][max logcnt], -1 padded
};

// rebalance_experts_hierarchical(weight, num_physical, num_groups, num_nodes, num_gpus): groups packed onto
// nodes, replicas chosen within each node, replicas packed onto the node's GPUs. Throws Error unless
// E % groups == 0, groups % nodes == 0, gpus % nodes == 0 and num_physical % gpus == 0.
Result rebalance_experts_hierarchical(const Matrix& weight, int num_physical, int num_groups, int num_nodes,
                                      int num_gpus);

// rebalance_experts: the hierarchical policy when num_groups % num_nodes == 0, else the global policy
// (hierarchical with one group and one node). Also fills log2phy. weight must be finite and non-negative.
Result rebalance_experts(const Matrix& weight, int num_replicas, int num_groups, int num_nodes, int num_gpus);

// Load per GPU of one layer: slot i carries weight[phy2log[i]] / logcnt[phy2log[i]]; GPU g holds the contiguous
// slots [g·R/gpus, (g+1)·R/gpus).
std::vector<double> gpu_loads(const std::vector<float>& weight, const std::vector<int>& phy2log,
                              const std::vector<int>& logcnt, int num_gpus);
// Load per GPU without EPLB: no replicas, logical expert e on GPU ⌊e·gpus/E⌋.
std::vector<double> gpu_loads_without_eplb(const std::vector<float>& weight, int num_gpus);

}  // namespace deepmoe::eplb
