#include "runtime/forward_chunks.h"

#include <algorithm>

#include "core/error.h"

namespace deepmoe {

std::vector<std::vector<ForwardPiece>> plan_forward_pieces(std::span<const int64_t> lengths,
                                                           std::span<const std::vector<int64_t>> logit_indices,
                                                           int64_t budget) {
  DEEPMOE_CHECK(budget >= 1 && lengths.size() == logit_indices.size());
  std::vector<std::vector<ForwardPiece>> steps(1);
  int64_t room = budget;
  for (size_t e = 0; e < lengths.size(); ++e) {
    int64_t at = 0;
    do {
      if (room == 0 && at < lengths[e]) {
        steps.emplace_back();
        room = budget;
      }
      ForwardPiece piece;
      piece.entry = e;
      piece.begin = at;
      piece.end = at + std::min(room, lengths[e] - at);
      for (int64_t i : logit_indices[e])
        if (i >= piece.begin && i < piece.end) piece.logit_indices.push_back(i - piece.begin);
      room -= piece.end - piece.begin;
      at = piece.end;
      steps.back().push_back(std::move(piece));
    } while (at < lengths[e]);
  }
  return steps;
}

Tensor gather_piece_rows(const std::vector<std::vector<ForwardPiece>>& steps, const std::vector<Tensor>& step_rows,
                         std::span<const std::vector<int64_t>> logit_indices, std::span<const int64_t> lengths,
                         const std::vector<bool>& every_row, int64_t width) {
  DEEPMOE_CHECK(steps.size() == step_rows.size());
  // Where each entry's pieces left their rows: the step's tensor and the piece's first row in it.
  struct Placed {
    const ForwardPiece* piece;
    const float* rows;
  };
  std::vector<std::vector<Placed>> of_entry(lengths.size());
  int64_t total = 0;
  for (size_t e = 0; e < lengths.size(); ++e)
    total += every_row[e] ? lengths[e] : int64_t(logit_indices[e].size());
  for (size_t s = 0; s < steps.size(); ++s) {
    int64_t row = 0;
    for (const ForwardPiece& p : steps[s]) {
      const int64_t n = every_row[p.entry] ? p.end - p.begin : int64_t(p.logit_indices.size());
      DEEPMOE_CHECK(step_rows[s].dim(0) >= row + n, "a step returned fewer rows than its pieces ask for");
      of_entry[p.entry].push_back({&p, step_rows[s].data<float>() + row * width});
      row += n;
    }
  }
  Tensor out = Tensor::uninitialized(DType::F32, {total, width});  // every row is written below
  float* dst = out.data<float>();
  for (size_t e = 0; e < lengths.size(); ++e) {
    if (every_row[e]) {
      for (const Placed& p : of_entry[e]) dst = std::copy_n(p.rows, (p.piece->end - p.piece->begin) * width, dst);
      continue;
    }
    // The piece holding each index in turn; a piece's rows are its indices in the entry's order.
    std::vector<int64_t> taken(of_entry[e].size(), 0);
    for (int64_t i : logit_indices[e]) {
      size_t k = 0;
      while (k < of_entry[e].size() && !(i >= of_entry[e][k].piece->begin && i < of_entry[e][k].piece->end)) ++k;
      DEEPMOE_CHECK(k < of_entry[e].size(), "a logit index outside its entry's positions");
      dst = std::copy_n(of_entry[e][k].rows + taken[k]++ * width, width, dst);
    }
  }
  return out;
}

}  // namespace deepmoe
