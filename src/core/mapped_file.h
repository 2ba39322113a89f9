// A read-only memory-mapped file. Checkpoint weights are used in place from these mappings (DESIGN.md §5).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/huge_page_mapping.h"

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
  // Then, where a large file came out mostly in 4 KB pages (the page cache of a file just written or copied holds
  // it in small folios), drops its page cache and reads it again in 2 MB pages (reread_in_huge_pages): data()
  // and the bytes stay the same. Returns what that step found and did.
  HugePageReread populate() const;

  // Drops the file's page cache and reads it again now, whatever its pages are (tests of the re-read path).
  HugePageReread reread_page_cache() const;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;  // kept open for the re-read (fdatasync, posix_fadvise) of the file that is mapped
};

// Whole file into a string (small text files: config.json, tokenizer.json). Throws Error naming the path.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t(1) << 30);

}  // namespace deepmoe
