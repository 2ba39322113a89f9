// A read-only memory-mapped file. Checkpoint weights are used in place from these mappings (DESIGN.md §5).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace deepmoe {

class MappedFile {
 public:
  // Throws deepmoe::Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Maps every page now (reading it from disk if needed) so that first use does not page-fault page by page: a
  // model's first forward pass would otherwise take a fault per 4 KB of weights, and software prefetches of
  // unmapped pages are dropped. Best effort: errors are ignored (the pages then fault in on use as before).
  void populate() const;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Whole file into a string (small text files: config.json, tokenizer.json). Throws Error naming the path.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t(1) << 30);

}  // namespace deepmoe
