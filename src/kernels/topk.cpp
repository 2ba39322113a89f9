#include "kernels/topk.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace deepmoe {
namespace {

// a ranks before b: larger value first, NaN last, lower index on ties.
bool ranks_before(const float* x, int a, int b) {
  float va = x[a], vb = x[b];
  bool na = std::isnan(va), nb = std::isnan(vb);
  if (na != nb) return nb;
  if (!na && va != vb) return va > vb;
  return a < b;
}

}  // namespace

void topk(const float* x, int n, int k, int* indices, float* values) {
  DEEPMOE_CHECK(k >= 0 && k <= n, "topk: k out of range");
  thread_local std::vector<int> order;
  order.resize(size_t(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [x](int a, int b) { return ranks_before(x, a, b); });
  for (int i = 0; i < k; ++i) {
    indices[i] = order[size_t(i)];
    if (values) values[i] = x[order[size_t(i)]];
  }
}

void topk_ref(const float* x, int n, int k, int* indices, float* values) {
  std::vector<bool> taken(size_t(n), false);
  for (int i = 0; i < k; ++i) {
    int best = -1;
    for (int j = 0; j < n; ++j)
      if (!taken[size_t(j)] && (best < 0 || ranks_before(x, j, best))) best = j;
    taken[size_t(best)] = true;
    indices[i] = best;
    if (values) values[i] = x[best];
  }
}

}  // namespace deepmoe
