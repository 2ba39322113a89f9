#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/huge_page_mapping.h"
#include "core/mapped_file.h"

namespace deepmoe {
namespace {

// The byte at `i` of the test files: every 8-byte word differs, so a page read from the wrong place shows.
uint8_t pattern_byte(uint64_t i) {
  uint64_t x = (i / 8) * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  return uint8_t(x >> (8 * (i % 8)));
}

// Writes `bytes` of the pattern in 64 KB writes (as a copy or a download does: the page cache then holds the
// file in small folios) and returns its path.
std::string write_pattern_file(const std::string& name, size_t bytes) {
  const std::string path = (std::filesystem::path(::testing::TempDir()) / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr) << path;
  std::vector<uint8_t> chunk(64 << 10);
  for (size_t off = 0; off < bytes; off += chunk.size()) {
    const size_t n = std::min(chunk.size(), bytes - off);
    for (size_t i = 0; i < n; ++i) chunk[i] = pattern_byte(off + i);
    EXPECT_EQ(std::fwrite(chunk.data(), 1, n, f), n);
  }
  std::fclose(f);
  return path;
}

// Index of the first byte that differs from the pattern, or `bytes` when none does.
size_t first_mismatch(const uint8_t* data, size_t bytes, uint64_t file_offset = 0) {
  for (size_t i = 0; i < bytes; ++i)
    if (data[i] != pattern_byte(file_offset + i)) return i;
  return bytes;
}

// The re-read drops the file's page cache under a live mapping and reads it again: the mapping must stay where
// it is and show the same bytes (the file was still dirty from being written, so this also covers write-back).
TEST(HugePageMapping, RereadKeepsTheMappingAndItsBytes) {
  const size_t bytes = (size_t(8) << 20) + 12345;  // 2 MB pages and a partial tail page
  const std::string path = write_pattern_file("huge_page_reread.bin", bytes);
  const auto file = MappedFile::open(path);
  const uint8_t* const data = file->data();
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(first_mismatch(data, bytes), bytes);

  // Below the size worth a re-read, populate() only maps the pages.
  const HugePageReread small = file->populate();
  EXPECT_FALSE(small.reread);

  const HugePageReread r = file->reread_page_cache();
  if (mapped_pages(data, bytes).has_value()) {
    EXPECT_TRUE(r.reread);  // with /proc/self/smaps the forced path always runs
    EXPECT_GE(r.after.resident_bytes, bytes / 4096 * 4096) << "the re-read mapping is populated";
  }
  EXPECT_EQ(file->data(), data);
  EXPECT_EQ(file->size(), bytes);
  EXPECT_EQ(first_mismatch(data, bytes), bytes);
  // And once more, now that the pages are clean and (where the kernel can) 2 MB folios.
  file->reread_page_cache();
  EXPECT_EQ(first_mismatch(data, bytes), bytes);
  std::filesystem::remove(path);
}

// A window of a file mapped at an offset: same bytes, and the address is where 2 MB page-table entries can map it.
TEST(HugePageMapping, MapsAtAnOffsetWithTheHugePagePhase) {
  const size_t bytes = size_t(6) << 20;
  const std::string path = write_pattern_file("huge_page_offset.bin", bytes);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (uint64_t offset : {uint64_t(0), uint64_t(3 * 4096), uint64_t(2) << 20}) {
    const size_t len = (size_t(3) << 20) + 100;
    void* p = map_file_huge_aligned(fd, offset, len);
    ASSERT_NE(p, nullptr) << offset;
    EXPECT_EQ((reinterpret_cast<uintptr_t>(p) - offset) % kHugePageBytes, 0u) << offset;
    populate_mapping(p, len);
    EXPECT_EQ(first_mismatch(static_cast<const uint8_t*>(p), len, offset), len) << offset;
    ::munmap(p, len);
  }
  ::close(fd);
  std::filesystem::remove(path);
}

// smaps accounting: an anonymous mapping touched page by page is resident in full and has no file pages; an
// address no mapping covers has no entry.
TEST(HugePageMapping, ReadsResidentAndHugeFileBytesOfAMapping) {
  const size_t bytes = size_t(1) << 20;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  std::memset(p, 1, bytes);
  const std::optional<MappedPages> pages = mapped_pages(p, bytes);
  if (!pages) {
    ::munmap(p, bytes);
    GTEST_SKIP() << "no /proc/self/smaps";
  }
  EXPECT_GE(pages->resident_bytes, bytes);
  EXPECT_EQ(pages->huge_file_bytes, 0u);
  ::munmap(p, bytes);
  EXPECT_FALSE(mapped_pages(p, bytes).has_value());
}

}  // namespace
}  // namespace deepmoe
