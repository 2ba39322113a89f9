#include "checkpoint/safetensors_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace deepmoe {
namespace {

using ojson = nlohmann::ordered_json;

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};

// Writes `bytes` chunks to path.tmp, then renames it over path.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
    file_.reset(std::fopen(tmp_.c_str(), "wb"));
    if (!file_) throw Error(std::string("cannot create: ") + std::strerror(errno), {.file = tmp_});
  }
  ~AtomicFile() {
    if (file_) {
      file_.reset();
      std::remove(tmp_.c_str());
    }
  }
  void write(const void* data, size_t n) {
    if (n && std::fwrite(data, 1, n, file_.get()) != n)
      throw Error(std::string("write failed: ") + std::strerror(errno), {.file = tmp_});
  }
  void commit() {
    std::FILE* f = file_.release();
    if (std::fclose(f) != 0) {
      std::remove(tmp_.c_str());
      throw Error(std::string("write failed: ") + std::strerror(errno), {.file = tmp_});
    }
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      int e = errno;
      std::remove(tmp_.c_str());
      throw Error(std::string("cannot rename into place: ") + std::strerror(e), {.file = path_});
    }
  }

 private:
  std::string path_, tmp_;
  std::unique_ptr<std::FILE, FileCloser> file_;
};

void write_file(const std::string& path, const std::vector<const std::pair<std::string, Tensor>*>& tensors,
                const std::vector<std::pair<std::string, std::string>>& metadata) {
  ojson header = ojson::object();
  if (!metadata.empty()) {
    ojson md = ojson::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    header["__metadata__"] = md;
  }
  uint64_t offset = 0;
  for (const auto* entry : tensors) {
    const Tensor& t = entry->second;
    ojson info = ojson::object();
    info["dtype"] = std::string(dtype_name(t.dtype()));
    info["shape"] = ojson::array();
    for (int64_t d : t.shape()) info["shape"].push_back(d);
    info["data_offsets"] = ojson::array({offset, offset + t.nbytes()});
    offset += t.nbytes();
    header[entry->first] = info;
  }
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned (as huggingface/safetensors does), which keeps
  // every zero-copy view aligned for its element type.
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  AtomicFile out(path);
  out.write(len_le, 8);
  out.write(text.data(), text.size());
  for (const auto* entry : tensors) out.write(entry->second.raw(), entry->second.nbytes());
  out.commit();
}

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

}  // namespace

void SafetensorsWriter::add(const std::string& name, const Tensor& tensor) {
  if (name.empty() || name == "__metadata__")
    throw Error("reserved tensor name", {.tensor = name.empty() ? "(empty)" : name});
  if (names_.count(name)) throw Error("tensor added twice", {.tensor = name});
  DEEPMOE_CHECK(tensor.is_contiguous(), "safetensors tensors must be contiguous: " + name);
  DEEPMOE_CHECK(tensor.raw() != nullptr || tensor.nbytes() == 0, "tensor without data: " + name);
  names_.insert(name);
  tensors_.emplace_back(name, tensor);
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = value;
      return;
    }
  }
  metadata_.emplace_back(key, value);
}

uint64_t SafetensorsWriter::data_bytes() const {
  uint64_t total = 0;
  for (const auto& [n, t] : tensors_) total += t.nbytes();
  return total;
}

void SafetensorsWriter::write(const std::string& path) const {
  std::vector<const std::pair<std::string, Tensor>*> all;
  for (const auto& e : tensors_) all.push_back(&e);
  write_file(path, all, metadata_);
}

std::vector<std::string> SafetensorsWriter::write_sharded(const std::string& dir, uint64_t max_shard_bytes) const {
  std::vector<std::vector<const std::pair<std::string, Tensor>*>> shards(1);
  uint64_t in_shard = 0;
  for (const auto& e : tensors_) {
    uint64_t n = e.second.nbytes();
    if (!shards.back().empty() && in_shard + n > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&e);
    in_shard += n;
  }
  std::vector<std::string> names;
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    names.push_back(shard_name(i, shards.size()));
    write_file(dir + "/" + names.back(), shards[i], metadata_);
    for (const auto* e : shards[i]) weight_map.emplace_back(e->first, names.back());
  }
  write_safetensors_index(dir, weight_map, data_bytes());
  return names;
}

void write_safetensors_index(const std::string& dir,
                             const std::vector<std::pair<std::string, std::string>>& tensor_to_shard,
                             uint64_t total_size) {
  ojson index = ojson::object();
  index["metadata"] = ojson::object({{"total_size", total_size}});
  ojson wm = ojson::object();
  for (const auto& [tensor, shard] : tensor_to_shard) wm[tensor] = shard;
  index["weight_map"] = wm;
  std::string text = index.dump(2) + "\n";
  AtomicFile out(dir + "/model.safetensors.index.json");
  out.write(text.data(), text.size());
  out.commit();
}

}  // namespace deepmoe
