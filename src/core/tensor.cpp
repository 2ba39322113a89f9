#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/buffer_cache.h"
#include "core/checked_math.h"
#include "core/error.h"

namespace deepmoe {
namespace {

void set_shape(std::array<int64_t, kMaxTensorRank>& shape, std::array<int64_t, kMaxTensorRank>& strides, int& rank,
               std::span<const int64_t> dims) {
  DEEPMOE_CHECK(dims.size() <= size_t(kMaxTensorRank), "tensor rank too large");
  rank = int(dims.size());
  int64_t stride = 1;
  for (int i = rank - 1; i >= 0; --i) {
    DEEPMOE_CHECK(dims[i] >= 0, "negative dimension");
    shape[i] = dims[i];
    strides[i] = stride;
    // Checked: a shape such as [0, 2^40, 2^40] has no elements but strides past int64 (signed overflow is UB).
    if (__builtin_mul_overflow(stride, dims[i], &stride))
      throw Error("tensor shape overflows: a stride exceeds 2^63");
  }
}

}  // namespace

Tensor Tensor::uninitialized(DType dtype, std::span<const int64_t> shape) {
  Tensor t;
  t.dtype_ = dtype;
  set_shape(t.shape_, t.strides_, t.rank_, shape);
  uint64_t count = 1;
  for (int64_t d : shape) {
    auto c = checked_mul(count, uint64_t(d));
    if (!c) throw Error("tensor shape " + t.shape_string() + " overflows");
    count = *c;
  }
  auto bytes = checked_mul(count, dtype_size_bytes(dtype));
  if (!bytes || *bytes > (uint64_t(1) << 46)) throw Error("tensor of shape " + t.shape_string() + " is too large");
  const size_t alloc = size_t(*bytes);
  void* p = buffer_alloc(alloc);
  t.data_ = p;
  t.owner_ = std::shared_ptr<void>(p, [alloc](void* q) { buffer_free(q, alloc); });
  return t;
}

Tensor Tensor::zeros(DType dtype, std::span<const int64_t> shape) {
  Tensor t = uninitialized(dtype, shape);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::view(DType dtype, std::span<const int64_t> shape, void* data, std::shared_ptr<void> owner) {
  Tensor t;
  t.dtype_ = dtype;
  set_shape(t.shape_, t.strides_, t.rank_, shape);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

int64_t Tensor::dim(int i) const {
  if (i < 0) i += rank_;
  DEEPMOE_CHECK(i >= 0 && i < rank_, "dimension index out of range");
  return shape_[i];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= shape_[i];
  return rank_ == 0 && data_ == nullptr ? 0 : n;
}

bool Tensor::is_contiguous() const {
  int64_t stride = 1;
  for (int i = rank_ - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != stride) return false;
    stride *= shape_[i];
  }
  return true;
}

Tensor Tensor::reshaped(std::span<const int64_t> shape) const {
  DEEPMOE_CHECK(is_contiguous(), "reshape of a non-contiguous tensor");
  Tensor t = view(dtype_, shape, data_, owner_);
  DEEPMOE_CHECK(t.numel() == numel(), "reshape " + shape_string() + " -> " + t.shape_string());
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  DEEPMOE_CHECK(rank_ >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "row slice out of range");
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + begin * strides_[0] * int64_t(dtype_size_bytes(dtype_));
  return t;
}

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
  return s + "]";
}

}  // namespace deepmoe
