#include "core/huge_page_mapping.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace deepmoe {
namespace {

uintptr_t round_up(uintptr_t x, uintptr_t to) { return (x + to - 1) / to * to; }

size_t page_bytes() {
  const long p = ::sysconf(_SC_PAGESIZE);
  return p > 0 ? size_t(p) : 4096;
}

// "Rss:   1234 kB" -> bytes, when the line starts with `field` (which ends in ':').
bool field_bytes(const char* line, const char* field, uint64_t* out) {
  const size_t n = std::strlen(field);
  if (std::strncmp(line, field, n) != 0) return false;
  *out = uint64_t(std::strtoull(line + n, nullptr, 10)) * 1024;
  return true;
}

}  // namespace

std::optional<MappedPages> mapped_pages(const void* addr, size_t bytes) {
  std::FILE* f = std::fopen("/proc/self/smaps", "re");
  if (!f) return std::nullopt;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(addr), hi = lo + bytes;
  MappedPages pages;
  bool in_range = false, seen = false;
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    // A mapping's header ("start-end perms offset dev inode path") has no ':' in its first word; its fields do.
    const char* space = std::strchr(line, ' ');
    const char* colon = std::strchr(line, ':');
    if (space && (!colon || colon > space)) {
      char* end = nullptr;
      const uintptr_t start = std::strtoull(line, &end, 16);
      const uintptr_t stop = (end && *end == '-') ? std::strtoull(end + 1, nullptr, 16) : 0;
      in_range = start < hi && stop > lo;
      seen = seen || in_range;
      continue;
    }
    if (!in_range) continue;
    uint64_t v = 0;
    if (field_bytes(line, "Rss:", &v)) pages.resident_bytes += v;
    else if (field_bytes(line, "FilePmdMapped:", &v)) pages.huge_file_bytes += v;
  }
  std::fclose(f);
  if (!seen) return std::nullopt;
  return pages;
}

void* map_file_huge_aligned(int fd, uint64_t offset, size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t page = page_bytes();
  void* p = MAP_FAILED;
  if (bytes >= kHugePageBytes) {
    // Reserve 2 MB more address space than needed, place the file where (address - offset) is a multiple of 2 MB,
    // and give back the slack on both sides.
    const size_t mapped = round_up(bytes, page);
    const size_t reserve = mapped + kHugePageBytes;
    void* r = ::mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r != MAP_FAILED) {
      const uintptr_t base = reinterpret_cast<uintptr_t>(r);
      const uintptr_t phase = uintptr_t(offset % kHugePageBytes);
      uintptr_t at = round_up(base, kHugePageBytes) + phase;
      if (at >= base + kHugePageBytes) at -= kHugePageBytes;
      p = ::mmap(reinterpret_cast<void*>(at), bytes, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, off_t(offset));
      if (p == MAP_FAILED) {
        ::munmap(r, reserve);
      } else {
        if (at > base) ::munmap(r, at - base);
        const uintptr_t tail = at + mapped;
        if (base + reserve > tail) ::munmap(reinterpret_cast<void*>(tail), base + reserve - tail);
      }
    }
  }
  if (p == MAP_FAILED) p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, off_t(offset));
  if (p == MAP_FAILED) return nullptr;
#ifdef MADV_HUGEPAGE
  // Advice only; where unsupported it fails and changes nothing.
  (void)::madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}

void populate_mapping(const void* addr, size_t bytes) {
  if (!addr || bytes == 0) return;
#ifdef MADV_POPULATE_READ
  if (::madvise(const_cast<void*>(addr), bytes, MADV_POPULATE_READ) == 0) return;
#endif
  // Older kernels: read one byte per page.
  const size_t page = page_bytes();
  const volatile uint8_t* p = static_cast<const uint8_t*>(addr);
  uint8_t sink = 0;
  for (size_t off = 0; off < bytes; off += page) sink = uint8_t(sink + p[off]);
  (void)sink;
}

namespace {

// Drops the page cache of [offset, offset + bytes) of fd after zapping the page-table entries through which
// [addr, addr + bytes) maps it (pages still mapped anywhere are not dropped). False if the kernel refused.
bool drop_cached_range(int fd, const void* addr, uint64_t offset, size_t bytes) {
  if (::madvise(const_cast<void*>(addr), bytes, MADV_DONTNEED) != 0) return false;
  return ::posix_fadvise(fd, off_t(offset), off_t(bytes), POSIX_FADV_DONTNEED) == 0;
}

// Whether dropping and re-reading a 4 MB window of the file brings it back in 2 MB pages.
bool window_rereads_huge(int fd, const void* addr, size_t bytes) {
  const size_t window = 2 * kHugePageBytes;
  const uint64_t offset = uint64_t(bytes / 2) / kHugePageBytes * kHugePageBytes;
  if (offset + window > bytes) return false;
  const void* in_main = static_cast<const uint8_t*>(addr) + offset;
  if (!drop_cached_range(fd, in_main, offset, window)) {
    populate_mapping(in_main, window);
    return false;
  }
  // Read it through a mapping of its own, so that smaps reports on the window alone.
  bool huge = false;
  if (void* probe = map_file_huge_aligned(fd, offset, window)) {
    populate_mapping(probe, window);
    const std::optional<MappedPages> pages = mapped_pages(probe, window);
    huge = pages && pages->huge_file_bytes > 0;
    ::munmap(probe, window);
  }
  populate_mapping(in_main, window);
  return huge;
}

}  // namespace

HugePageReread reread_in_huge_pages(int fd, const void* addr, size_t bytes, size_t min_bytes, bool force) {
  HugePageReread r;
  if (fd < 0 || !addr || bytes == 0) return r;
  if (!force && bytes < min_bytes) return r;
  const std::optional<MappedPages> before = mapped_pages(addr, bytes);
  if (!before) return r;
  r.before = r.after = *before;
  if (!force) {
    // Not all resident (memory is short): a re-read would only evict something else.
    if (before->resident_bytes < bytes / 8 * 7) return r;
    if (before->resident_bytes - std::min(before->huge_file_bytes, before->resident_bytes) <=
        before->resident_bytes / 8)
      return r;
  }
  // Dirty pages (a file written moments ago) are not dropped: write them back first. fdatasync works on a
  // read-only descriptor.
  (void)::fdatasync(fd);
  if (!force && !window_rereads_huge(fd, addr, bytes)) return r;
  if (!drop_cached_range(fd, addr, 0, bytes)) {
    populate_mapping(addr, bytes);
    return r;
  }
  populate_mapping(addr, bytes);
  r.reread = true;
  if (const std::optional<MappedPages> after = mapped_pages(addr, bytes)) r.after = *after;
  return r;
}

}  // namespace deepmoe
