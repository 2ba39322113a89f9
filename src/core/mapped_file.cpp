#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace deepmoe {

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(std::string("cannot open: ") + std::strerror(errno), {.file = path});
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(std::string("cannot stat: ") + std::strerror(e), {.file = path});
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("not a regular file", {.file = path});
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ == 0) {
    ::close(fd);
    return f;
  }
  // MADV_HUGEPAGE at a 2 MB-aligned address: pages read in from now on may come as 2 MB folios mapped by one TLB
  // entry each (kernels whose page cache has large folios, e.g. ext4/xfs), so GEMV streams of the checkpoint see
  // far fewer TLB misses.
  void* p = map_file_huge_aligned(fd, 0, f->size_);
  if (!p) {
    int e = errno;
    ::close(fd);
    throw Error(std::string("cannot mmap: ") + std::strerror(e), {.file = path});
  }
  f->data_ = static_cast<const uint8_t*>(p);
  f->fd_ = fd;
  return f;
}

HugePageReread MappedFile::populate() const {
  populate_mapping(data_, size_);
  return reread_in_huge_pages(fd_, data_, size_);
}

HugePageReread MappedFile::reread_page_cache() const {
  return reread_in_huge_pages(fd_, data_, size_, 0, /*force=*/true);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  // open + fstat rather than an ifstream: an ifstream "opens" a directory and then reports its size as
  // 2^63 - 1, so a folder given for a text file would read as an absurd size instead of what it is.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(std::string("cannot open: ") + std::strerror(errno), {.file = path});
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error(std::string("cannot stat: ") + std::strerror(errno), {.file = path});
  if (S_ISDIR(st.st_mode)) throw Error("is a directory, not a file", {.file = path});
  auto too_big = [&](uint64_t bytes) {
    return Error("file is " + std::to_string(bytes) + " bytes, more than the limit of " + std::to_string(max_bytes),
                 {.file = path});
  };
  if (S_ISREG(st.st_mode) && uint64_t(st.st_size) > max_bytes) throw too_big(uint64_t(st.st_size));
  // Read to the end rather than trusting st_size: pipes and /dev/stdin have none.
  std::string s;
  if (S_ISREG(st.st_mode)) s.reserve(size_t(st.st_size));
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("cannot read: ") + std::strerror(errno), {.file = path});
    }
    if (n == 0) break;
    if (s.size() + size_t(n) > max_bytes) throw too_big(uint64_t(s.size()) + uint64_t(n));
    s.append(buf, size_t(n));
  }
  return s;
}

}  // namespace deepmoe
