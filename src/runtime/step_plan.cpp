#include "runtime/step_plan.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.h"

namespace deepmoe {

void PlanWriter::raw(const void* p, size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  bytes_.insert(bytes_.end(), b, b + n);
}

const std::byte* PlanReader::take(int64_t n, size_t elem) {
  if (n < 0 || size_t(n) > (bytes_.size() - at_) / elem)
    throw Error("step plan: a message of " + std::to_string(bytes_.size()) + " bytes ends before the " +
                std::to_string(n) + " values read at byte " + std::to_string(at_));
  const std::byte* p = bytes_.data() + at_;
  at_ += size_t(n) * elem;
  return p;
}

int64_t PlanReader::i64() {
  int64_t v;
  std::memcpy(&v, take(1, sizeof v), sizeof v);
  return v;
}

std::vector<int32_t> PlanReader::i32s(int64_t n) {
  std::vector<int32_t> v(size_t(std::max<int64_t>(n, 0)));
  const std::byte* p = take(n, sizeof(int32_t));
  if (n > 0) std::memcpy(v.data(), p, size_t(n) * sizeof(int32_t));
  return v;
}

std::vector<int64_t> PlanReader::i64s(int64_t n) {
  std::vector<int64_t> v(size_t(std::max<int64_t>(n, 0)));
  const std::byte* p = take(n, sizeof(int64_t));
  if (n > 0) std::memcpy(v.data(), p, size_t(n) * sizeof(int64_t));
  return v;
}

void PlanReader::f32s(float* out, int64_t n) {
  const std::byte* p = take(n, sizeof(float));
  if (n > 0) std::memcpy(out, p, size_t(n) * sizeof(float));
}

}  // namespace deepmoe
