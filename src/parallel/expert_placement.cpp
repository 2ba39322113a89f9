#include "parallel/expert_placement.h"

#include <string>

#include "core/error.h"

namespace deepmoe {

ExpertPlacement ExpertPlacement::from_phy2log(const std::vector<std::vector<int>>& phy2log, int n_logical,
                                              int n_ranks) {
  if (phy2log.empty()) throw Error("expert placement: no layers");
  if (n_logical < 1) throw Error("expert placement: n_logical must be positive, got " + std::to_string(n_logical));
  if (n_ranks < 1) throw Error("expert placement: n_ranks must be positive, got " + std::to_string(n_ranks));
  ExpertPlacement p;
  p.n_layers_ = int(phy2log.size());
  p.n_logical_ = n_logical;
  p.n_physical_ = int(phy2log[0].size());
  p.n_ranks_ = n_ranks;
  if (p.n_physical_ < n_logical)
    throw Error("expert placement: " + std::to_string(p.n_physical_) + " physical slots cannot hold " +
                std::to_string(n_logical) + " logical experts");
  if (p.n_physical_ % n_ranks != 0)
    throw Error("expert placement: " + std::to_string(p.n_physical_) + " physical slots do not divide over " +
                std::to_string(n_ranks) + " ranks");
  const size_t L = size_t(p.n_layers_), E = size_t(n_logical), P = size_t(p.n_physical_);
  p.phy2log_.reserve(L * P);
  p.logcnt_.assign(L * E, 0);
  p.replica_ofs_.assign(L * (E + 1), 0);
  p.replica_slots_.assign(L * P, 0);
  p.max_replicas_.assign(L, 0);
  for (size_t l = 0; l < L; ++l) {
    const auto& row = phy2log[l];
    if (row.size() != P)
      throw Error("expert placement: layer " + std::to_string(l) + " has " + std::to_string(row.size()) +
                  " physical slots, layer 0 has " + std::to_string(P));
    int* cnt = &p.logcnt_[l * E];
    for (size_t i = 0; i < P; ++i) {
      int e = row[i];
      if (e < 0 || e >= n_logical)
        throw Error("expert placement: layer " + std::to_string(l) + " slot " + std::to_string(i) +
                    " names logical expert " + std::to_string(e) + ", outside [0, " + std::to_string(n_logical) + ")");
      ++cnt[e];
      p.phy2log_.push_back(e);
    }
    int* ofs = &p.replica_ofs_[l * (E + 1)];
    for (size_t e = 0; e < E; ++e) {
      if (cnt[e] == 0)
        throw Error("expert placement: layer " + std::to_string(l) + " has no slot for logical expert " +
                    std::to_string(e));
      ofs[e + 1] = ofs[e] + cnt[e];
      p.max_replicas_[l] = std::max(p.max_replicas_[l], cnt[e]);
    }
    std::vector<int> fill(ofs, ofs + E);
    for (size_t i = 0; i < P; ++i) p.replica_slots_[l * P + size_t(fill[size_t(row[i])]++)] = int(i);
  }
  return p;
}

ExpertPlacement ExpertPlacement::uniform(int n_layers, int n_logical, int n_ranks, int n_redundant) {
  if (n_layers < 1) throw Error("expert placement: n_layers must be positive, got " + std::to_string(n_layers));
  if (n_redundant < 0 || n_redundant > n_logical)
    throw Error("expert placement: n_redundant must be in [0, n_logical], got " + std::to_string(n_redundant));
  std::vector<int> row(size_t(n_logical + n_redundant));
  for (size_t i = 0; i < row.size(); ++i) row[i] = int(i) % n_logical;
  return from_phy2log(std::vector<std::vector<int>>(static_cast<size_t>(n_layers), row), n_logical, n_ranks);
}

std::span<const int> ExpertPlacement::phy2log(int layer) const {
  DEEPMOE_CHECK(layer >= 0 && layer < n_layers_, "layer " + std::to_string(layer));
  return {phy2log_.data() + size_t(layer) * size_t(n_physical_), size_t(n_physical_)};
}

std::span<const int> ExpertPlacement::logcnt(int layer) const {
  DEEPMOE_CHECK(layer >= 0 && layer < n_layers_, "layer " + std::to_string(layer));
  return {logcnt_.data() + size_t(layer) * size_t(n_logical_), size_t(n_logical_)};
}

std::span<const int> ExpertPlacement::replicas(int layer, int logical) const {
  DEEPMOE_CHECK(layer >= 0 && layer < n_layers_ && logical >= 0 && logical < n_logical_);
  const int* ofs = &replica_ofs_[size_t(layer) * size_t(n_logical_ + 1)];
  return {replica_slots_.data() + size_t(layer) * size_t(n_physical_) + size_t(ofs[logical]),
          size_t(ofs[logical + 1] - ofs[logical])};
}

std::vector<int> ExpertPlacement::log2phy_padded(int layer) const {
  const int m = max_replicas(layer);
  std::vector<int> out(size_t(n_logical_) * size_t(m), -1);
  for (int e = 0; e < n_logical_; ++e) {
    auto r = replicas(layer, e);
    for (size_t j = 0; j < r.size(); ++j) out[size_t(e) * size_t(m) + j] = r[j];
  }
  return out;
}

bool ExpertPlacement::operator==(const ExpertPlacement& o) const {
  return n_layers_ == o.n_layers_ && n_logical_ == o.n_logical_ && n_physical_ == o.n_physical_ &&
         n_ranks_ == o.n_ranks_ && phy2log_ == o.phy2log_;
}

}  // namespace deepmoe
