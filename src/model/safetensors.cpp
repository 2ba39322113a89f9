#include "model/safetensors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/checked_math.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/warning.h"

namespace deepmoe {
namespace {

using nlohmann::json;

// dtype strings of the safetensors format that deepmoe does not implement; named so the error can say
// "unsupported" rather than "unknown" (reliability.md §1 L5).
bool is_known_unsupported_dtype(std::string_view s) {
  for (const char* d : {"F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4", "F6_E2M3", "F6_E3M2", "U16", "U32", "U64",
                        "C64"}) {
    if (s == d) return true;
  }
  return false;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

TensorInfo parse_tensor_entry(const std::string& name, const json& entry, const std::string& path) {
  auto fail = [&](const std::string& field, const std::string& message) -> Error {
    return Error(message, {.file = path, .tensor = name, .field = field});
  };
  if (!entry.is_object()) throw fail("", "entry is not a JSON object");
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") throw fail(key, "unexpected field");
  }
  TensorInfo info;
  info.name = name;

  auto dt = entry.find("dtype");
  if (dt == entry.end()) throw fail("dtype", "missing field");
  if (!dt->is_string()) throw fail("dtype", "expected a string");
  const std::string& dname = dt->get_ref<const std::string&>();
  auto parsed = dtype_from_name(dname);
  if (!parsed) {
    throw fail("dtype", (is_known_unsupported_dtype(dname) ? "unsupported dtype \"" : "unknown dtype \"") + dname +
                            "\"");
  }
  info.dtype = *parsed;

  auto sh = entry.find("shape");
  if (sh == entry.end()) throw fail("shape", "missing field");
  if (!sh->is_array()) throw fail("shape", "expected an array of non-negative integers");
  if (sh->size() > size_t(kMaxTensorRank))
    throw fail("shape", "rank " + std::to_string(sh->size()) + " exceeds the maximum " +
                            std::to_string(kMaxTensorRank));
  uint64_t numel = 1, nonzero_product = 1;
  for (const json& d : *sh) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
      throw fail("shape", "dimension " + d.dump() + " is not a non-negative integer");
    uint64_t v = d.get<uint64_t>();
    if (v > uint64_t(INT64_MAX)) throw fail("shape", "dimension " + d.dump() + " is too large");
    info.shape.push_back(int64_t(v));
    auto n = checked_mul(numel, v);
    // numel must also fit int64 for Tensor.
    if (!n || *n > uint64_t(INT64_MAX)) throw fail("shape", "element count of shape " + d.dump() + " overflows");
    numel = *n;
    // Strides skip zero dims, so [0, 2^40, 2^40] is empty yet not representable: bound the nonzero product too.
    auto nz = checked_mul(nonzero_product, v == 0 ? 1 : v);
    if (!nz || *nz > uint64_t(INT64_MAX))
      throw fail("shape", "shape " + shape_string(info.shape) + " overflows (strides past 2^63)");
    nonzero_product = *nz;
  }
  auto bytes = checked_mul(numel, dtype_size_bytes(info.dtype));
  if (!bytes)
    throw fail("shape", "shape " + shape_string(info.shape) + " of " + dname + " overflows 64-bit byte counts");

  auto off = entry.find("data_offsets");
  if (off == entry.end()) throw fail("data_offsets", "missing field");
  if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
    throw fail("data_offsets", "expected [begin, end] as two non-negative integers, got " + off->dump());
  info.begin = (*off)[0].get<uint64_t>();
  info.end = (*off)[1].get<uint64_t>();
  if (info.end < info.begin)
    throw fail("data_offsets", "end " + std::to_string(info.end) + " is before begin " + std::to_string(info.begin));
  if (info.end - info.begin != *bytes)
    throw fail("data_offsets", "[" + std::to_string(info.begin) + ", " + std::to_string(info.end) + "] holds " +
                                   std::to_string(info.end - info.begin) + " bytes, but shape " +
                                   shape_string(info.shape) + " of " + dname + " needs " + std::to_string(*bytes));
  return info;
}

bool is_valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 (RFC 3629 §3).
    static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

json parse_json_rejecting_duplicates(const char* begin, const char* end, const std::string& path,
                                     const std::string& what) {
  // nlohmann keeps the last of duplicate keys silently; the safetensors README disallows duplicates
  // (reliability.md §1 L2), so the parse callback tracks the keys of every open object and rejects a repeat.
  std::vector<std::set<std::string>> open_objects;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!open_objects.empty() && !open_objects.back().insert(key).second)
          throw Error(what + " has the key \"" + key + "\" twice", {.file = path, .tensor = depth == 1 ? key : ""});
        break;
      }
      default:
        break;
    }
    return true;
  };
  if (const void* nul = std::memchr(begin, 0, size_t(end - begin)))
    throw Error(what + " has a NUL byte at offset " + std::to_string(static_cast<const char*>(nul) - begin),
                {.file = path});
  try {
    return json::parse(begin, end, callback);
  } catch (const json::exception& e) {
    throw Error(what + " is not valid JSON: " + e.what(), {.file = path});
  }
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated not to overflow at parse time
  return n;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, uint64_t file_size, const std::string& path) {
  // L1: the 8-byte length and its bounds.
  if (file_size < 8)
    throw Error("file is " + std::to_string(file_size) + " bytes, too small for the 8-byte header length",
                {.file = path});
  uint64_t header_len = read_u64_le(bytes);
  if (header_len > kSafetensorsMaxHeaderBytes)
    throw Error("header length " + std::to_string(header_len) + " exceeds the limit of " +
                    std::to_string(kSafetensorsMaxHeaderBytes) + " bytes",
                {.file = path});
  if (header_len > file_size - 8)
    throw Error("header length " + std::to_string(header_len) + " runs past the end of the " +
                    std::to_string(file_size) + "-byte file",
                {.file = path});
  const uint8_t* text = bytes + 8;
  // L2: UTF-8, JSON, an object.
  if (header_len == 0 || text[0] != '{') throw Error("header does not start with '{'", {.file = path});
  if (!is_valid_utf8(text, header_len)) throw Error("header is not valid UTF-8", {.file = path});
  // A raw NUL is never valid JSON, but nlohmann treats it as the end of input, which would let a file hide a
  // second payload behind a valid header (polyglot files, reliability.md §1 L6).
  if (const void* nul = std::memchr(text, 0, header_len))
    throw Error("header has a NUL byte at header offset " +
                    std::to_string(static_cast<const uint8_t*>(nul) - text),
                {.file = path});
  json root = parse_json_rejecting_duplicates(reinterpret_cast<const char*>(text),
                                              reinterpret_cast<const char*>(text + header_len), path, "header");
  if (!root.is_object()) throw Error("header is not a JSON object", {.file = path});

  SafetensorsHeader h;
  h.data_offset = 8 + header_len;
  const uint64_t data_bytes = file_size - h.data_offset;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        throw Error("__metadata__ must be an object mapping strings to strings", {.file = path, .field = key});
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          throw Error("value must be a string, got " + mv.dump(), {.file = path, .field = "__metadata__." + mk});
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    TensorInfo info = parse_tensor_entry(key, value, path);
    if (info.end > data_bytes)
      throw Error("data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                      "] run past the " + std::to_string(data_bytes) + "-byte data section",
                  {.file = path, .tensor = key, .field = "data_offsets"});
    h.tensors.push_back(std::move(info));
  }

  // L3: sorted by offset, the tensors must tile the data section exactly: no overlap (aliasing is a DoS), no
  // gap, ending at EOF.
  std::vector<const TensorInfo*> order;
  order.reserve(h.tensors.size());
  for (const TensorInfo& t : h.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : order) {
    if (t->begin < expected)
      throw Error("data_offsets [" + std::to_string(t->begin) + ", " + std::to_string(t->end) +
                      "] overlap tensor '" + previous->name + "'",
                  {.file = path, .tensor = t->name, .field = "data_offsets"});
    if (t->begin > expected)
      throw Error("gap of " + std::to_string(t->begin - expected) + " unused bytes before this tensor's data",
                  {.file = path, .tensor = t->name, .field = "data_offsets"});
    expected = t->end;
    previous = t;
  }
  if (expected != data_bytes)
    throw Error("tensor data ends at byte " + std::to_string(expected) + " of the " + std::to_string(data_bytes) +
                    "-byte data section; the rest of the file is not covered by any tensor",
                {.file = path, .tensor = previous ? previous->name : ""});
  return h;
}

HugePageReread SafetensorsFile::populate() const { return file_->populate(); }
uint64_t SafetensorsFile::file_size() const { return file_->size(); }

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  f->file_ = MappedFile::open(path);
  f->header_ = parse_safetensors_header(f->file_->data(), f->file_->size(), path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_.emplace(f->header_.tensors[i].name, i);
  return f;
}

const std::string& SafetensorsFile::path() const { return file_->path(); }
uint64_t SafetensorsFile::file_bytes() const { return file_->size(); }

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

Tensor SafetensorsFile::tensor(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (!info) throw Error("no such tensor in this file", {.file = path(), .tensor = std::string(name)});
  return tensor(*info);
}

Tensor SafetensorsFile::tensor(const TensorInfo& info) const {
  // Offsets were validated against the file size when the header was parsed.
  const uint8_t* data = file_->data() + header_.data_offset + info.begin;
  if (reinterpret_cast<uintptr_t>(data) % dtype_size_bytes(info.dtype) == 0) {
    // The mapping is read-only (PROT_READ): checkpoint tensors are never written.
    return Tensor::view(info.dtype, info.shape, const_cast<uint8_t*>(data), std::shared_ptr<void>(file_));
  }
  Tensor copy = Tensor::zeros(info.dtype, info.shape);
  std::memcpy(copy.raw(), data, info.nbytes());
  return copy;
}

// ---------------------------------------------------------------------------------------------------------------

namespace {

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Shard names are plain file names inside the model folder: anything that could leave it ("../x", "/etc/x",
// "a/b") is rejected (reliability.md §2 R8, the same rule for paths taken from files).
bool is_plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

}  // namespace

namespace {

std::string gigabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", double(bytes) / 1e9);
  return buf;
}

void populate_if_fits(const Checkpoint& c, Checkpoint::Populate populate) {
  if (populate == Checkpoint::Populate::Never) return;
  uint64_t bytes = 0;
  for (const auto& f : c.files()) bytes += f->file_size();
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0 || bytes > uint64_t(pages) / 4 * 3 * uint64_t(page)) return;
  int reread = 0;
  uint64_t reread_bytes = 0, huge_before = 0, huge_after = 0;
  for (const auto& f : c.files()) {
    const HugePageReread r = f->populate();
    if (!r.reread) continue;
    ++reread;
    reread_bytes += f->file_size();
    huge_before += r.before.huge_file_bytes;
    huge_after += r.after.huge_file_bytes;
  }
  // A one-time cost of seconds that the person should be able to connect with the faster model that follows.
  if (reread > 0)
    warn_once("checkpoint.reread_huge_pages:" + c.dir(),
              "read " + std::to_string(reread) + " file(s) of " + c.dir() + " (" + gigabytes(reread_bytes) +
                  " GB) from disk again: the page cache held them in 4 KB pages (as it does a file just written or "
                  "copied), which slows every token; now " + gigabytes(huge_after) + " GB are mapped in 2 MB "
                  "pages (before: " + gigabytes(huge_before) + " GB)");
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& dir, Populate populate) {
  Checkpoint c = open_unpopulated(dir);
  if (c.random_weights())
    warn_once("checkpoint.random_weights:" + dir,
              dir + " holds random weights (written by deepmoe gen-model for tests and benchmarks): its output is "
                    "meaningless text");
  populate_if_fits(c, populate);
  return c;
}

bool Checkpoint::random_weights() const {
  for (const auto& f : files_)
    if (f->metadata().count(kRandomWeightsMetadataKey)) return true;
  return false;
}

Checkpoint Checkpoint::open_unpopulated(const std::string& dir) {
  Checkpoint c;
  c.dir_ = dir;
  const std::string single = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (file_exists(single)) {
    // transformers prefers model.safetensors when both exist.
    c.files_.push_back(SafetensorsFile::open(single));
    for (const TensorInfo& t : c.files_[0]->tensors()) c.entries_.emplace(t.name, Entry{0, &t});
    return c;
  }
  if (!file_exists(index_path))
    throw Error("no model.safetensors or model.safetensors.index.json in this folder", {.file = dir});

  std::string text = read_text_file(index_path, kSafetensorsMaxHeaderBytes);
  json root = parse_json_rejecting_duplicates(text.data(), text.data() + text.size(), index_path, "index");
  if (!root.is_object()) throw Error("index is not a JSON object", {.file = index_path});
  auto wm = root.find("weight_map");
  if (wm == root.end()) throw Error("missing field", {.file = index_path, .field = "weight_map"});
  if (!wm->is_object() || wm->empty())
    throw Error("expected a non-empty object mapping tensor names to shard files",
                {.file = index_path, .field = "weight_map"});
  auto md = root.find("metadata");
  if (md != root.end() && !md->is_object() && !md->is_null())
    throw Error("expected an object", {.file = index_path, .field = "metadata"});

  std::map<std::string, size_t> shard_index;  // shard file name → files_ position
  std::map<std::string, std::string> shard_of;
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string())
      throw Error("shard must be a string, got " + shard.dump(),
                  {.file = index_path, .tensor = name, .field = "weight_map"});
    const std::string& shard_name = shard.get_ref<const std::string&>();
    if (!is_plain_file_name(shard_name))
      throw Error("shard \"" + shard_name + "\" is not a plain file name in the model folder",
                  {.file = index_path, .tensor = name, .field = "weight_map"});
    if (!shard_index.count(shard_name)) {
      const std::string shard_path = dir + "/" + shard_name;
      if (!file_exists(shard_path))
        throw Error("shard \"" + shard_name + "\" listed in the index does not exist",
                    {.file = index_path, .tensor = name, .field = "weight_map"});
      shard_index[shard_name] = c.files_.size();
      c.files_.push_back(SafetensorsFile::open(shard_path));
    }
    shard_of[name] = shard_name;
  }
  for (const auto& [name, shard_name] : shard_of) {
    size_t f = shard_index.at(shard_name);
    const TensorInfo* info = c.files_[f]->find(name);
    if (!info)
      throw Error("the index maps this tensor to \"" + shard_name + "\", which does not contain it",
                  {.file = index_path, .tensor = name});
    c.entries_.emplace(name, Entry{f, info});
  }
  for (size_t f = 0; f < c.files_.size(); ++f) {
    for (const TensorInfo& t : c.files_[f]->tensors()) {
      auto it = shard_of.find(t.name);
      if (it == shard_of.end())
        throw Error("tensor is in this shard but not listed in the index weight_map",
                    {.file = c.files_[f]->path(), .tensor = t.name});
      if (shard_index.at(it->second) != f)
        throw Error("tensor is in two shards: here and in \"" + it->second + "\"",
                    {.file = c.files_[f]->path(), .tensor = t.name});
    }
  }
  return c;
}

const Checkpoint::Entry& Checkpoint::entry(std::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw Error("no such tensor in the checkpoint", {.file = dir_, .tensor = std::string(name)});
  return it->second;
}

bool Checkpoint::contains(std::string_view name) const { return entries_.find(name) != entries_.end(); }

Tensor Checkpoint::get(std::string_view name) const {
  const Entry& e = entry(name);
  return files_[e.file]->tensor(*e.info);
}

const TensorInfo& Checkpoint::info(std::string_view name) const { return *entry(name).info; }

const std::string& Checkpoint::file_of(std::string_view name) const { return files_[entry(name).file]->path(); }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, e] : entries_) total += e.info->nbytes();
  return total;
}

}  // namespace deepmoe
