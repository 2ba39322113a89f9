// A small tensor: dtype, shape, strides (in elements), a data pointer and an optional owner. Borrowed views
// (owner == nullptr) point into memory someone else keeps alive, e.g. an mmapped checkpoint. No autograd.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "core/dtype.h"

namespace deepmoe {

constexpr int kMaxTensorRank = 8;

class Tensor {
 public:
  Tensor() = default;

  // Owning, zero-filled, 64-byte aligned, contiguous (memory from core/buffer_cache.h).
  static Tensor zeros(DType dtype, std::span<const int64_t> shape);
  static Tensor zeros(DType dtype, std::initializer_list<int64_t> shape) {
    return zeros(dtype, std::span<const int64_t>(shape.begin(), shape.size()));
  }
  // As zeros, but the contents are unspecified: for outputs that are written completely before they are read.
  static Tensor uninitialized(DType dtype, std::span<const int64_t> shape);
  static Tensor uninitialized(DType dtype, std::initializer_list<int64_t> shape) {
    return uninitialized(dtype, std::span<const int64_t>(shape.begin(), shape.size()));
  }
  // Contiguous view of memory kept alive by `owner` (may be null: the caller guarantees the lifetime).
  static Tensor view(DType dtype, std::span<const int64_t> shape, void* data, std::shared_ptr<void> owner = {});
  static Tensor view(DType dtype, std::initializer_list<int64_t> shape, void* data,
                     std::shared_ptr<void> owner = {}) {
    return view(dtype, std::span<const int64_t>(shape.begin(), shape.size()), data, std::move(owner));
  }

  DType dtype() const { return dtype_; }
  int rank() const { return rank_; }
  int64_t dim(int i) const;  // negative i counts from the end
  std::span<const int64_t> shape() const { return {shape_.data(), size_t(rank_)}; }
  std::span<const int64_t> strides() const { return {strides_.data(), size_t(rank_)}; }
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size_bytes(dtype_); }
  bool is_contiguous() const;
  bool empty() const { return data_ == nullptr && numel() == 0; }
  bool defined() const { return rank_ > 0 || data_ != nullptr; }

  void* raw() const { return data_; }
  template <typename T> T* data() const { return static_cast<T*>(data_); }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // Same data, new contiguous shape with the same element count (contiguous tensors only).
  Tensor reshaped(std::span<const int64_t> shape) const;
  Tensor reshaped(std::initializer_list<int64_t> shape) const {
    return reshaped(std::span<const int64_t>(shape.begin(), shape.size()));
  }
  // Rows [begin, end) of dimension 0.
  Tensor slice_rows(int64_t begin, int64_t end) const;

  std::string shape_string() const;  // "[2, 3, 4]"

 private:
  DType dtype_ = DType::F32;
  int rank_ = 0;
  std::array<int64_t, kMaxTensorRank> shape_{};
  std::array<int64_t, kMaxTensorRank> strides_{};
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

}  // namespace deepmoe
