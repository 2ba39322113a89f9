#include "kernels/rmsnorm.h"

#include <cmath>

#include "core/thread_pool.h"

namespace deepmoe {
namespace {

// Eight interleaved partial sums let the compiler vectorize without -ffast-math; the order is fixed per row.
float sum_of_squares(const float* x, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * x[i + j];
  float tail = 0;
  for (; i < n; ++i) tail += x[i] * x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

}  // namespace

void rmsnorm(const float* x, int64_t x_stride, const float* weight, int64_t rows, int64_t dim, float eps, float* y,
             int64_t y_stride, ThreadPool* pool) {
  parallel_for(pool, rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * x_stride;
      float* yr = y + r * y_stride;
      float inv = 1.0f / std::sqrt(sum_of_squares(xr, dim) / float(dim) + eps);
      for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
    }
  }, 4);
}

void rmsnorm_ref(const float* x, int64_t x_stride, const float* weight, int64_t rows, int64_t dim, float eps,
                 float* y, int64_t y_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[r * x_stride + i]) * x[r * x_stride + i];
    double inv = 1.0 / std::sqrt(ss / double(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * y_stride + i] = float(double(weight[i]) * x[r * x_stride + i] * inv);
  }
}

}  // namespace deepmoe
