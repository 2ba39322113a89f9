#include "model/expert_slot_storage.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"
#include "model/config.h"
#include "model/model_weights.h"
#include "model/safetensors.h"

namespace deepmoe {
namespace {

constexpr int64_t kAlign = 64;
int64_t align_up(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

std::array<const WeightMatrix*, 3> parts_of(const MoeWeights& w, int slot) {
  return {&w.expert_gate[size_t(slot)], &w.expert_up[size_t(slot)], &w.expert_down[size_t(slot)]};
}

}  // namespace

ExpertSlotLayout ExpertSlotLayout::of_layer(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer) {
  ExpertSlotLayout L;
  L.layer_name_ = "model.layers." + std::to_string(layer) + ".mlp.experts";
  const char* names[3] = {"gate_proj", "up_proj", "down_proj"};
  const int64_t shapes[3][2] = {{c.moe_intermediate_size, c.hidden_size},
                                {c.moe_intermediate_size, c.hidden_size},
                                {c.hidden_size, c.moe_intermediate_size}};
  int64_t off = 0;
  for (int i = 0; i < 3; ++i) {
    Part& p = L.parts_[size_t(i)];
    p.dtype = ckpt.dtype_of(L.layer_name_ + ".0." + names[i] + ".weight");
    // Checked for every expert from the header alone, so all ranks reach the same verdict before any exchange.
    for (int64_t e = 1; e < c.n_routed_experts; ++e) {
      const std::string name = L.layer_name_ + "." + std::to_string(e) + "." + names[i] + ".weight";
      if (ckpt.dtype_of(name) != p.dtype)
        throw Error(name + " has dtype " + std::string(dtype_name(ckpt.dtype_of(name))) + " while expert 0 has " +
                        std::string(dtype_name(p.dtype)) + "; moving experts between ranks needs one dtype per "
                        "projection",
                    {ckpt.file_of(name), name, ""});
    }
    p.n = shapes[i][0];
    p.k = shapes[i][1];
    p.data_offset = off;
    p.data_bytes = p.n * p.k * int64_t(dtype_size_bytes(p.dtype));
    off = align_up(off + p.data_bytes);
    if (p.dtype == DType::F8_E4M3) {
      p.scale_offset = off;
      p.scale_bytes = ((p.n + 127) / 128) * ((p.k + 127) / 128) * int64_t(sizeof(float));
      off = align_up(off + p.scale_bytes);
    }
  }
  L.bytes_per_slot_ = off;
  return L;
}

void ExpertSlotLayout::pack(const MoeWeights& w, int slot, uint8_t* blob) const {
  const auto src = parts_of(w, slot);
  for (size_t i = 0; i < 3; ++i) {
    const Part& p = parts_[i];
    const WeightMatrix& m = *src[i];
    if (m.dtype != p.dtype || m.n != p.n || m.k != p.k || (p.scale_bytes > 0) != (m.scale_inv != nullptr))
      throw Error(layer_name_ + ": local expert slot " + std::to_string(slot) + " has dtype " +
                  std::string(dtype_name(m.dtype)) + " while expert 0 has " + std::string(dtype_name(p.dtype)) +
                  "; moving experts between ranks needs one dtype per projection");
    std::memcpy(blob + p.data_offset, m.data, size_t(p.data_bytes));
    if (p.scale_bytes > 0) std::memcpy(blob + p.scale_offset, m.scale_inv, size_t(p.scale_bytes));
  }
}

void ExpertSlotLayout::bind(const uint8_t* blob, MoeWeights& w, int slot) const {
  WeightMatrix* dst[3] = {&w.expert_gate[size_t(slot)], &w.expert_up[size_t(slot)], &w.expert_down[size_t(slot)]};
  for (size_t i = 0; i < 3; ++i) {
    const Part& p = parts_[i];
    *dst[i] = WeightMatrix{p.dtype, p.n, p.k, blob + p.data_offset,
                           p.scale_bytes > 0 ? reinterpret_cast<const float*>(blob + p.scale_offset) : nullptr};
  }
}

ExpertSlotStorage::ExpertSlotStorage(int64_t bytes) : bytes_(bytes) {
  if (bytes <= 0) return;
  void* p = std::aligned_alloc(size_t(kAlign), size_t(align_up(bytes)));
  if (!p) throw std::bad_alloc();
  data_.reset(static_cast<uint8_t*>(p));
}

void ExpertSlotStorage::Free::operator()(uint8_t* p) const { std::free(p); }

}  // namespace deepmoe
