// Multi-head latent attention of one layer over a batch of sequence slices (reference §1.5). The new tokens'
// cache rows [kv_norm(latent) | rope(k_pe)] are written to each sequence's cache first, then each sequence's
// queries attend causally over its whole cache (positions [0, start + i]).
#pragma once

#include <cstdint>
#include <vector>

#include "model/forward_context.h"
#include "model/kv_cache.h"
#include "model/model_weights.h"

namespace deepmoe {

// Rows [offset, offset + count) of the batch are positions [start, start + count) of the sequence whose cache is
// `cache` (layer `cache_layer`). The cache must have capacity for start + count tokens.
struct SequenceSlice {
  KvCache* cache = nullptr;
  int64_t cache_layer = 0;
  int64_t start = 0, offset = 0, count = 0;
};

// x [T, hidden] (already input-normed), positions [T] → out [T, hidden] (after o_proj).
void mla_forward(const ForwardContext& ctx, const AttentionWeights& w, const float* x, int64_t T,
                 const int64_t* positions, const std::vector<SequenceSlice>& slices, float* out);

}  // namespace deepmoe
