// Writes safetensors files and sharded checkpoint folders in the Hugging Face layout (the format of
// safetensors.h): 8-byte little-endian header length, the JSON header padded with spaces so the data starts at
// an 8-byte boundary, then the tensors' bytes in insertion order. `deepmoe gen-model` and the tests use it.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace deepmoe {

class SafetensorsWriter {
 public:
  // Keeps `tensor` (sharing its owner) until write(); a borrowed view's memory must stay alive until then.
  // The tensor must be contiguous. Throws Error on a duplicate or reserved name ("__metadata__", "").
  void add(const std::string& name, const Tensor& tensor);
  void set_metadata(const std::string& key, const std::string& value);

  size_t size() const { return tensors_.size(); }
  uint64_t data_bytes() const;  // sum of tensor bytes

  // One file. Written to `path`.tmp and renamed, so a reader never sees a half-written file.
  void write(const std::string& path) const;
  // A folder of shards `model-00001-of-0000N.safetensors` holding at most max_shard_bytes of tensor data each
  // (a larger tensor gets a shard of its own), plus model.safetensors.index.json. Metadata goes to every shard.
  // Returns the shard file names.
  std::vector<std::string> write_sharded(const std::string& dir, uint64_t max_shard_bytes) const;

 private:
  std::vector<std::pair<std::string, Tensor>> tensors_;
  std::unordered_set<std::string> names_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

// dir/model.safetensors.index.json: {"metadata": {"total_size": total_size}, "weight_map": {tensor: shard}}.
void write_safetensors_index(const std::string& dir,
                             const std::vector<std::pair<std::string, std::string>>& tensor_to_shard,
                             uint64_t total_size);

}  // namespace deepmoe
