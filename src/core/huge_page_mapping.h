// Mapping a read-only file in 2 MB pages, and finding out whether it is.
//
// A file mapping with MADV_HUGEPAGE is mapped by 2 MB page-table entries only where the page cache holds the file
// in 2 MB folios. How it holds them depends on how the pages got there: read in through such a mapping (or in
// large reads) on a kernel and filesystem with large folios (e.g. ext4 or xfs on Linux 6.x), 2 MB folios; written
// in small writes (cp, a download, a writer that writes tensor by tensor), small folios, and they stay small for as
// long as they stay cached. A model streams its weights once per decoded token, so 4 KB pages cost a TLB miss per
// 4 KB; the cure is to drop the file's clean cached pages and read it again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace deepmoe {

inline constexpr size_t kHugePageBytes = size_t(2) << 20;

// Resident bytes of the mappings overlapping [addr, addr + bytes) and how many of them are file pages mapped in
// 2 MB pages (Rss and FilePmdMapped of /proc/self/smaps; a mapping that extends past the range counts whole).
// nullopt where /proc/self/smaps cannot be read. Reading it walks every mapping of the process, so call it once
// per file, not per tensor.
struct MappedPages {
  uint64_t resident_bytes = 0;
  uint64_t huge_file_bytes = 0;
};
std::optional<MappedPages> mapped_pages(const void* addr, size_t bytes);

// mmap(PROT_READ, MAP_PRIVATE) of [offset, offset + bytes) of fd at an address whose distance from the file
// offset is a multiple of 2 MB (which 2 MB page-table entries need; some filesystems place file mappings so by
// themselves, others do not), with MADV_HUGEPAGE. Returns nullptr on failure (errno set by mmap).
void* map_file_huge_aligned(int fd, uint64_t offset, size_t bytes);

// Maps every page of [addr, addr + bytes) now (MADV_POPULATE_READ, else one read per page). Best effort.
void populate_mapping(const void* addr, size_t bytes);

// What reread_in_huge_pages did.
struct HugePageReread {
  bool reread = false;          // the file's page cache was dropped and read again
  MappedPages before, after;    // of the mapping (after == before when nothing was done)
};

// For a populated mapping `addr` of the whole file `fd` (`bytes` long) made by map_file_huge_aligned: when the
// file is large (>= min_bytes) and more than an eighth of its resident pages are not mapped in 2 MB pages, tests
// on a 4 MB window whether dropping and re-reading its pages brings them back as 2 MB pages, and if so does it
// for the whole file: zaps the mapping's page-table entries (MADV_DONTNEED; the mapping stays where it is, and
// being read-only and private it has no pages of its own to lose), writes back any dirty pages (fdatasync), drops
// the file's clean page cache (POSIX_FADV_DONTNEED) and populates the mapping again. The bytes seen through addr
// never change. Harmless where it cannot help: without /proc/self/smaps it does nothing; without large folios
// (or THP disabled) the window test fails and only 4 MB were re-read; pages another process maps are not
// dropped and simply stay as they are. `force` skips the size and fraction conditions and the window test (tests).
HugePageReread reread_in_huge_pages(int fd, const void* addr, size_t bytes, size_t min_bytes = size_t(64) << 20,
                                    bool force = false);

}  // namespace deepmoe
