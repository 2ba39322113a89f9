// The bytes of an engine step plan (runtime/engine.h): what the leader tells a follower about a step, and what
// the follower sends back. Plain values in this process's byte order (every rank runs the same binary on the same
// kind of machine); a reader that runs past the end is an error, never an overrun.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace deepmoe {

class PlanWriter {
 public:
  void i64(int64_t v) { raw(&v, sizeof v); }
  void i32s(std::span<const int32_t> v) { raw(v.data(), v.size_bytes()); }
  void i64s(std::span<const int64_t> v) { raw(v.data(), v.size_bytes()); }
  void f32s(std::span<const float> v) { raw(v.data(), v.size_bytes()); }
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  void raw(const void* p, size_t n);
  std::vector<std::byte> bytes_;
};

class PlanReader {
 public:
  explicit PlanReader(std::span<const std::byte> bytes) : bytes_(bytes) {}
  int64_t i64();
  std::vector<int32_t> i32s(int64_t n);
  std::vector<int64_t> i64s(int64_t n);
  void f32s(float* out, int64_t n);
  bool done() const { return at_ == bytes_.size(); }

 private:
  const std::byte* take(int64_t n, size_t elem);
  std::span<const std::byte> bytes_;
  size_t at_ = 0;
};

}  // namespace deepmoe
