#include "kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace deepmoe {

void softmax_rows(float* x, int64_t rows, int64_t n, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * stride;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) mx = row[i] > mx ? row[i] : mx;
    if (mx == -std::numeric_limits<float>::infinity()) {
      for (int64_t i = 0; i < n; ++i) row[i] = 0.0f;
      continue;
    }
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      row[i] = std::exp(row[i] - mx);
      sum += row[i];
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) row[i] *= inv;
  }
}

void softmax_rows_ref(float* x, int64_t rows, int64_t n, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * stride;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double(row[i]));
    if (mx == -std::numeric_limits<double>::infinity()) {
      for (int64_t i = 0; i < n; ++i) row[i] = 0.0f;
      continue;
    }
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(double(row[i]) - mx);
    for (int64_t i = 0; i < n; ++i) row[i] = float(std::exp(double(row[i]) - mx) / sum);
  }
}

}  // namespace deepmoe
