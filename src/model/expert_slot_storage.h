// Routed-expert weights of a rank's local slots as one fixed-size byte blob per slot (live rebalance):
// the unit that parallel/expert_migration moves between ranks when a new expert placement is applied. Until the
// first rebalance a rank's experts point into the checkpoint's mmap (replicas of one expert share the same
// mapped bytes); a rebalance keeps every slot this rank sources itself where it is (mmap or earlier storage) and
// gives each slot received from another rank an ExpertSlotStorage of its own.
//
// Blob layout (every section 64-byte aligned): gate_proj weight, its weight_scale_inv (FP8 only), up_proj weight,
// its scales, down_proj weight, its scales — byte copies, so a moved expert computes bitwise as before.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "kernels/gemm.h"

namespace deepmoe {

struct ModelConfig;
struct MoeWeights;
class Checkpoint;

class ExpertSlotLayout {
 public:
  // The layout of `layer`'s routed experts, with each projection's dtype taken from the checkpoint's expert 0
  // (every rank computes the same layout without communication). Throws Error when some expert's projection has
  // another dtype (checked from the header on every rank alike).
  static ExpertSlotLayout of_layer(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer);

  int64_t bytes_per_slot() const { return bytes_per_slot_; }
  // Copies local slot `slot` of w into blob[bytes_per_slot]. Throws Error when that expert's dtype or shape
  // differs from the layout (a checkpoint whose experts mix dtypes cannot be migrated).
  void pack(const MoeWeights& w, int slot, uint8_t* blob) const;
  // Points local slot `slot` of w at the blob (which must outlive w's use of it).
  void bind(const uint8_t* blob, MoeWeights& w, int slot) const;

 private:
  struct Part {
    DType dtype = DType::F32;
    int64_t n = 0, k = 0;
    int64_t data_offset = 0, data_bytes = 0;
    int64_t scale_offset = 0, scale_bytes = 0;  // scale_bytes = 0 unless FP8
  };
  std::array<Part, 3> parts_;  // gate, up, down
  int64_t bytes_per_slot_ = 0;
  std::string layer_name_;
};

// 64-byte aligned owned bytes for a rank's migrated slots.
class ExpertSlotStorage {
 public:
  ExpertSlotStorage() = default;
  explicit ExpertSlotStorage(int64_t bytes);
  uint8_t* data() { return data_.get(); }
  int64_t bytes() const { return bytes_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> data_;
  int64_t bytes_ = 0;
};

}  // namespace deepmoe
