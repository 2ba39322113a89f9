// safetensors reader and writer: round trips for every dtype (rank-0 and zero-size tensors included), the exact
// byte layout of the format, zero-copy views, and checkpoint folders (single file and index + shards).
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "loading_test_util.h"
#include "model/safetensors.h"
#include "checkpoint/safetensors_writer.h"

using namespace deepmoe;
using namespace deepmoe::testing;
using nlohmann::json;

namespace {

const DType kAllDtypes[] = {DType::F64, DType::F32,  DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2,
                            DType::I64, DType::I32, DType::I16, DType::I8,   DType::U8,      DType::BOOL};

// Deterministic bytes that differ per tensor and per position.
Tensor patterned(DType dtype, std::initializer_list<int64_t> shape, int seed) {
  Tensor t = Tensor::zeros(dtype, shape);
  auto* p = t.data<uint8_t>();
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(i * 37 + seed * 11 + 5);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
         std::equal(a.shape().begin(), a.shape().end(), b.shape().begin(), b.shape().end()) &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(SafetensorsWriter, ExactBytesOfATinyFile) {
  // The format by hand: length, header padded with spaces to 8-byte alignment, then little-endian data.
  TempDir dir;
  Tensor a = Tensor::zeros(DType::F32, {2});
  a.data<float>()[0] = 1.0f;
  a.data<float>()[1] = 2.0f;
  SafetensorsWriter w;
  w.add("a", a);
  w.write(dir.file("a.safetensors"));
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string data("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // 1.0f, 2.0f
  EXPECT_EQ(read_bytes(dir.file("a.safetensors")), safetensors_bytes(header, data));
}

TEST(SafetensorsWriter, HeaderIsAlignedAndInInsertionOrder) {
  TempDir dir;
  SafetensorsWriter w;
  w.add("z.last_name_first", patterned(DType::U8, {3}, 1));
  w.add("a.second", patterned(DType::BF16, {5}, 2));
  w.add("m.third", patterned(DType::F32, {2, 2}, 3));
  w.set_metadata("format", "pt");
  w.write(dir.file("x.safetensors"));
  std::string bytes = read_bytes(dir.file("x.safetensors"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 3 + 10 + 16);
  // Parsed independently (nlohmann, order-preserving).
  auto header = nlohmann::ordered_json::parse(bytes.substr(8, n));
  std::vector<std::string> keys;
  for (auto& [k, v] : header.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "z.last_name_first", "a.second", "m.third"}));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["z.last_name_first"]["data_offsets"], json::array({0, 3}));
  EXPECT_EQ(header["a.second"]["data_offsets"], json::array({3, 13}));
  EXPECT_EQ(header["m.third"]["data_offsets"], json::array({13, 29}));
  EXPECT_EQ(header["a.second"]["dtype"], "BF16");
}

TEST(Safetensors, RoundTripsEveryDtypeRankZeroAndZeroSize) {
  TempDir dir;
  SafetensorsWriter w;
  std::vector<std::pair<std::string, Tensor>> expected;
  int seed = 0;
  for (DType d : kAllDtypes) {
    expected.emplace_back("t." + std::string(dtype_name(d)), patterned(d, {3, 5}, ++seed));
    expected.emplace_back("scalar." + std::string(dtype_name(d)), patterned(d, {}, ++seed));
    expected.emplace_back("empty." + std::string(dtype_name(d)), patterned(d, {2, 0, 3}, ++seed));
  }
  expected.emplace_back("rank8", patterned(DType::F32, {1, 2, 1, 2, 1, 2, 1, 3}, ++seed));
  expected.emplace_back("zero_rank1", patterned(DType::BF16, {0}, ++seed));
  for (auto& [n, t] : expected) w.add(n, t);
  w.set_metadata("format", "pt");
  w.set_metadata("unicode", "π≈3.14");
  w.write(dir.file("all.safetensors"));

  auto f = SafetensorsFile::open(dir.file("all.safetensors"));
  ASSERT_EQ(f->tensors().size(), expected.size());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("unicode"), "π≈3.14");
  EXPECT_EQ(f->file_bytes(), f->data_offset() + w.data_bytes());
  for (auto& [name, t] : expected) {
    SCOPED_TRACE(name);
    const TensorInfo* info = f->find(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, t.dtype());
    EXPECT_EQ(info->numel(), t.numel());
    Tensor back = f->tensor(name);
    EXPECT_TRUE(same_bytes(back, t));
    EXPECT_EQ(back.rank(), t.rank());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(back.raw()) % dtype_size_bytes(back.dtype()), 0u);
  }
  EXPECT_EQ(f->tensor("scalar.F32").numel(), 1);
  EXPECT_EQ(f->tensor("empty.BF16").numel(), 0);
}

TEST(Safetensors, ViewsAreZeroCopyAndKeepTheMappingAlive) {
  TempDir dir;
  SafetensorsWriter w;
  w.add("a", patterned(DType::F32, {4, 4}, 1));
  w.add("b", patterned(DType::BF16, {8}, 2));
  w.write(dir.file("v.safetensors"));
  Tensor a, b;
  {
    auto f = SafetensorsFile::open(dir.file("v.safetensors"));
    a = f->tensor("a");
    b = f->tensor("b");
    // Both views point into one mapping, at their offsets: nothing was copied.
    EXPECT_EQ(static_cast<const uint8_t*>(b.raw()) - static_cast<const uint8_t*>(a.raw()), 64);
    EXPECT_EQ(a.owner(), b.owner());
    EXPECT_NE(a.owner(), nullptr);
  }  // the file object is gone; the views' owner keeps the mapping (ASan would flag a use after unmap)
  EXPECT_TRUE(same_bytes(a, patterned(DType::F32, {4, 4}, 1)));
  EXPECT_TRUE(same_bytes(b, patterned(DType::BF16, {8}, 2)));
}

TEST(Safetensors, MisalignedDataIsCopiedAligned) {
  // A legal file where an F32 tensor starts at an odd data offset (after a 1-byte U8 tensor) and the header
  // length is not a multiple of 8: the reader must not hand out a misaligned float pointer.
  TempDir dir;
  std::string header = R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  if ((8 + header.size()) % 8 == 0) header += " ";
  std::string data("\x07\x00\x00\x80\x3f\x00\x00\x00\xc0", 9);  // 7, then 1.0f, -2.0f
  write_bytes(dir.file("m.safetensors"), safetensors_bytes(header, data));
  auto f = SafetensorsFile::open(dir.file("m.safetensors"));
  Tensor t = f->tensor("f");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 4, 0u);
  EXPECT_EQ(t.data<float>()[0], 1.0f);
  EXPECT_EQ(t.data<float>()[1], -2.0f);
  EXPECT_EQ(f->tensor("u").data<uint8_t>()[0], 7);
}

TEST(Safetensors, EmptyFileWithOnlyMetadataIsLegal) {
  TempDir dir;
  write_bytes(dir.file("e.safetensors"), safetensors_bytes(R"({"__metadata__":{"k":"v"}})", ""));
  auto f = SafetensorsFile::open(dir.file("e.safetensors"));
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->metadata().at("k"), "v");
  std::string msg = error_of([&] { f->tensor("missing"); });
  EXPECT_NE(msg.find("e.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'missing'"), std::string::npos) << msg;
}

TEST(SafetensorsWriter, RejectsDuplicateAndReservedNames) {
  SafetensorsWriter w;
  w.add("a", patterned(DType::F32, {1}, 1));
  EXPECT_NE(error_of([&] { w.add("a", patterned(DType::F32, {1}, 2)); }).find("added twice"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add("__metadata__", patterned(DType::F32, {1}, 2)); }).find("reserved"),
            std::string::npos);
  EXPECT_EQ(w.size(), 1u);
}

TEST(Checkpoint, SingleFileFolder) {
  TempDir dir;
  SafetensorsWriter w;
  w.add("model.embed_tokens.weight", patterned(DType::BF16, {16, 8}, 1));
  w.add("model.layers.0.self_attn.q_a_proj.weight", patterned(DType::F8_E4M3, {4, 8}, 2));
  w.add("model.layers.0.self_attn.q_a_proj.weight_scale_inv", patterned(DType::F32, {1, 1}, 3));
  w.write(dir.file("model.safetensors"));
  Checkpoint c = Checkpoint::open(dir.path());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"model.embed_tokens.weight",
                                                 "model.layers.0.self_attn.q_a_proj.weight",
                                                 "model.layers.0.self_attn.q_a_proj.weight_scale_inv"}));
  EXPECT_EQ(c.total_bytes(), 256u + 32u + 4u);
  EXPECT_EQ(c.dtype_of("model.layers.0.self_attn.q_a_proj.weight"), DType::F8_E4M3);
  EXPECT_TRUE(same_bytes(c.get("model.embed_tokens.weight"), patterned(DType::BF16, {16, 8}, 1)));
  EXPECT_FALSE(c.contains("lm_head.weight"));
  std::string msg = error_of([&] { c.get("lm_head.weight"); });
  EXPECT_NE(msg.find(dir.path()), std::string::npos) << msg;
  EXPECT_NE(msg.find("'lm_head.weight'"), std::string::npos) << msg;
}

TEST(Checkpoint, ShardedFolderWithIndex) {
  TempDir dir;
  SafetensorsWriter w;
  std::vector<std::pair<std::string, Tensor>> expected;
  for (int i = 0; i < 7; ++i)
    expected.emplace_back("model.layers." + std::to_string(i) + ".mlp.weight", patterned(DType::F32, {10, 10}, i));
  expected.emplace_back("scalar", patterned(DType::F32, {}, 9));
  expected.emplace_back("empty", patterned(DType::BF16, {0, 7}, 10));
  for (auto& [n, t] : expected) w.add(n, t);
  w.set_metadata("format", "pt");
  // 400-byte tensors, at most 1000 bytes per shard → shards of 2 tensors each, the last with the small ones.
  std::vector<std::string> shards = w.write_sharded(dir.path(), 1000);
  ASSERT_EQ(shards.size(), 4u);
  EXPECT_EQ(shards[0], "model-00001-of-00004.safetensors");

  json index = json::parse(read_bytes(dir.file("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], w.data_bytes());
  EXPECT_EQ(index["weight_map"]["model.layers.2.mlp.weight"], "model-00002-of-00004.safetensors");

  Checkpoint c = Checkpoint::open(dir.path());
  EXPECT_EQ(c.files().size(), 4u);
  EXPECT_EQ(c.names().size(), expected.size());
  EXPECT_EQ(c.total_bytes(), w.data_bytes());
  for (auto& [name, t] : expected) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(same_bytes(c.get(name), t));
    EXPECT_EQ(c.dtype_of(name), t.dtype());
  }
  EXPECT_EQ(c.file_of("model.layers.0.mlp.weight"), dir.file("model-00001-of-00004.safetensors"));
  EXPECT_EQ(c.file_of("model.layers.6.mlp.weight"), dir.file("model-00004-of-00004.safetensors"));
  EXPECT_EQ(c.files()[1]->metadata().at("format"), "pt");
}

TEST(Checkpoint, PrefersTheSingleFileWhenBothExist) {
  TempDir dir;
  SafetensorsWriter sharded;
  sharded.add("x", patterned(DType::F32, {2}, 1));
  sharded.write_sharded(dir.path(), 1 << 20);
  SafetensorsWriter single;
  single.add("y", patterned(DType::F32, {2}, 2));
  single.write(dir.file("model.safetensors"));
  Checkpoint c = Checkpoint::open(dir.path());
  EXPECT_TRUE(c.contains("y"));
  EXPECT_FALSE(c.contains("x"));
}
