// The sampler's random source: xoshiro256** (Blackman & Vigna, "Scrambled linear pseudorandom number
// generators", 2021) seeded through splitmix64. It is written here rather than taken from <random> because
// std:: distributions may produce different numbers on different standard libraries, and a seed must
// reproduce a generation exactly on every build.
#pragma once

#include <cstdint>

namespace deepmoe {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  // Expands the 64-bit seed into the 256-bit state with splitmix64, as the xoshiro authors recommend.
  void reseed(uint64_t seed);

  uint64_t next_u64();

  // Uniform in [0, 1) with 53 random bits: every value is exactly representable, no rounding up to 1.
  double uniform();

 private:
  uint64_t s_[4];
};

}  // namespace deepmoe
