// safetensors files over mmap, and checkpoint folders (model.safetensors, or model.safetensors.index.json +
// shards), validated before any tensor is touched.
//
// Format (huggingface/safetensors README): 8-byte little-endian header length N, N bytes of UTF-8 JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data; offsets
// are relative to byte 8+N. Every check of the reliability checklist §1 L1–L6 runs in
// parse_safetensors_header(): header cap, UTF-8/JSON/object, duplicate names, string metadata, known dtype,
// shape × dtype without overflow and equal to end − begin, offsets in order, without gaps or overlap, covering
// the data exactly to EOF. A violation is a deepmoe::Error naming the file and the tensor, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/huge_page_mapping.h"
#include "core/tensor.h"

namespace deepmoe {

class MappedFile;

// safetensors' MAX_HEADER_SIZE (reliability.md §1 L1).
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data section
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in header order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // 8 + N: where the data section starts in the file
};

// Validates the header of a whole safetensors file held in `bytes` (file_size bytes) and returns it. Only the
// header is read, but the offsets are checked against file_size. Throws Error naming `path` (and the tensor).
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, uint64_t file_size, const std::string& path);

class SafetensorsFile {
 public:
  // Maps and validates `path`.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  HugePageReread populate() const;  // MappedFile::populate
  uint64_t file_size() const;

  const std::string& path() const;
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  // A view of the mapped bytes; the Tensor's owner keeps the mapping alive. Zero-copy when the data is aligned
  // to its element size (always, for files this writer or HF's produce); otherwise an aligned owned copy, so
  // no caller ever reads a misaligned float. Throws Error naming the file and tensor when absent.
  Tensor tensor(std::string_view name) const;
  Tensor tensor(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  uint64_t file_bytes() const;
  uint64_t data_offset() const { return header_.data_offset; }

 private:
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> index_;
};

// A model folder's weights: model.safetensors, or model.safetensors.index.json + the shards it names.
//
// Index checks: the index is a JSON object with a string→string "weight_map"; shard names are plain file names
// in the folder (no "/", no "..": path traversal is rejected); every shard listed exists and is a valid
// safetensors file; every weight_map entry names a tensor actually in that shard; a tensor found in two shards,
// or in a shard but missing from weight_map, is an error.
// __metadata__ key that `deepmoe gen-model` writes into every shard it makes: the weights are random numbers, so a
// model loaded from them produces meaningless text (its value says how they were drawn).
inline constexpr char kRandomWeightsMetadataKey[] = "deepmoe_random_weights";

class Checkpoint {
 public:
  // IfFitsInMemory (for running a model): when all shards together take at most 3/4 of physical memory, their pages
  // are mapped at open (MappedFile::populate), so the first forward pass does not fault page by page, and a large
  // shard the page cache holds in 4 KB pages is read again in 2 MB pages (said once, core/warning.h). Never: header
  // readers such as inspect.
  enum class Populate { IfFitsInMemory, Never };
  static Checkpoint open(const std::string& dir, Populate populate = Populate::IfFitsInMemory);

  const std::string& dir() const { return dir_; }
  bool contains(std::string_view name) const;
  // Zero-copy view (see SafetensorsFile::tensor). Throws Error naming the folder and tensor when absent.
  Tensor get(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const;  // same error when absent
  DType dtype_of(std::string_view name) const { return info(name).dtype; }
  std::vector<std::string> names() const;  // sorted
  uint64_t total_bytes() const;            // sum of tensor data bytes
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  // The file holding `name` (for error messages and inspection).
  const std::string& file_of(std::string_view name) const;
  // True when a shard carries kRandomWeightsMetadataKey (opening such a checkpoint warns once, core/warning.h).
  bool random_weights() const;

 private:
  static Checkpoint open_unpopulated(const std::string& dir);
  struct Entry {
    size_t file;
    const TensorInfo* info;
  };
  const Entry& entry(std::string_view name) const;

  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace deepmoe
