// Many short strings stored back to back in one buffer: one allocation for ~10^5 token spellings instead of one
// each (each fresh page costs a fault; tokenizer load time).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace deepmoe {

class PackedStrings {
 public:
  void push_back(std::string_view s) {
    DEEPMOE_CHECK(text_.size() + s.size() <= UINT32_MAX, "PackedStrings over 4 GiB");
    text_.append(s);
    ends_.push_back(uint32_t(text_.size()));
  }
  size_t size() const { return ends_.size(); }
  std::string_view operator[](size_t i) const {
    const size_t begin = i ? ends_[i - 1] : 0;
    return std::string_view(text_).substr(begin, ends_[i] - begin);
  }
  void clear() {
    text_.clear();
    ends_.clear();
  }
  void reserve(size_t strings, size_t bytes) {
    ends_.reserve(strings);
    text_.reserve(bytes);
  }

 private:
  std::string text_;
  std::vector<uint32_t> ends_;
};

}  // namespace deepmoe
