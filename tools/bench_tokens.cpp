#include "bench_tokens.h"

#include <algorithm>

namespace deepmoe::tools {

std::vector<int32_t> bench_tokens(int64_t n, int64_t vocab, uint64_t salt) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint64_t x = 0x9E3779B97F4A7C15ull ^ salt;
  const int64_t lo = std::min<int64_t>(1000, vocab / 2);
  for (auto& v : t) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v = int32_t(lo + int64_t((x >> 33) % uint64_t(vocab - lo)));
  }
  return t;
}

}  // namespace deepmoe::tools
