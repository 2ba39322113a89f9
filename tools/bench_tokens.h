// The synthetic prompts of `deepmoe bench`: deterministic token ids from a fixed LCG, so every run times the same
// input and the cases of one run differ only by their salt.
#pragma once

#include <cstdint>
#include <vector>

namespace deepmoe::tools {

// n token ids in [min(1000, vocab / 2), vocab), a function of (n, vocab, salt) only.
std::vector<int32_t> bench_tokens(int64_t n, int64_t vocab, uint64_t salt);

}  // namespace deepmoe::tools
