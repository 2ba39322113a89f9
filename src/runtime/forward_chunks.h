// A forward call over many positions as consecutive steps of at most a budget of positions each. One step over an
// 8k-token prompt holds every position's activations of a layer at once (several GB on a V2-Lite-sized layer, and
// fresh pages to fault in each time); steps of a few thousand keep that bounded and each GEMM as wide as it needs
// to be. The forward is batch-invariant and a sequence's earlier steps are in its cache when the next runs, so
// every row is bitwise what one step gives (the engine's chunked-prefill tests).
//
// The plan cuts the batch in order: step 0 takes the first `budget` positions of the flattened batch, step 1 the
// next, and so on; an entry cut in two has its earlier positions in the earlier step. Each piece keeps the logit
// indices that fall in it (relative to the piece, in the entry's order), and the rows the steps return are put
// back in the order one step over the whole batch returns them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace deepmoe {

// Positions [begin, end) of batch entry `entry` in one step.
struct ForwardPiece {
  size_t entry = 0;
  int64_t begin = 0, end = 0;
  std::vector<int64_t> logit_indices;  // indices into the piece's positions
};

// steps[s]: the pieces of step s, in batch order. An entry with no positions gets an empty piece in the step it
// falls in. budget >= 1.
std::vector<std::vector<ForwardPiece>> plan_forward_pieces(std::span<const int64_t> lengths,
                                                           std::span<const std::vector<int64_t>> logit_indices,
                                                           int64_t budget);

// The rows of a whole-batch step from the steps' rows (step_rows[s]: [rows of step s, width] F32, pieces in order,
// each piece's rows in its logit_indices order, or all its positions' rows in order when every_row[entry]). The
// result has, per entry in batch order, the rows of logit_indices[entry] in that order, or every position's row
// in order when every_row[entry].
Tensor gather_piece_rows(const std::vector<std::vector<ForwardPiece>>& steps, const std::vector<Tensor>& step_rows,
                         std::span<const std::vector<int64_t>> logit_indices, std::span<const int64_t> lengths,
                         const std::vector<bool>& every_row, int64_t width);

}  // namespace deepmoe
