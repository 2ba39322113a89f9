// A corpus of deliberately corrupt safetensors files, checkpoint folders and config.json files (the loading
// faults a checkpoint reader must survive, in the style of llama.cpp's tests/test-gguf.cpp). Every case must
// give a deepmoe::Error whose message names the file and the tensor or field at fault, plus the problem —
// never a crash; CI runs this file under ASan + UBSan. A seeded mutation sweep then throws thousands of random
// damaged variants of a valid file at the parser.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "loading_test_util.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "checkpoint/safetensors_writer.h"

using namespace deepmoe;
using namespace deepmoe::testing;
using nlohmann::json;

namespace {

enum class Opener { File, Checkpoint, Config };

struct CorruptCase {
  std::string name;
  Opener opener;
  // Writes the case into `dir`; returns what the opener receives (a file path or a folder).
  std::function<std::string(const std::string& dir)> make;
  // Substrings the error message must contain: the file's name, the tensor/field, and the problem.
  std::vector<std::string> expect;
};

std::string f32_entry(uint64_t begin, uint64_t end, const std::string& shape = "[2]") {
  return R"({"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[)" + std::to_string(begin) + "," +
         std::to_string(end) + "]}";
}

// A single safetensors file `bad.safetensors` from raw bytes.
CorruptCase file_case(std::string name, std::string bytes, std::vector<std::string> expect) {
  expect.insert(expect.begin(), "bad.safetensors");
  return {std::move(name), Opener::File,
          [bytes = std::move(bytes)](const std::string& dir) {
            write_bytes(dir + "/bad.safetensors", bytes);
            return dir + "/bad.safetensors";
          },
          std::move(expect)};
}

CorruptCase header_case(std::string name, std::string header, std::string data, std::vector<std::string> expect) {
  return file_case(std::move(name), safetensors_bytes(header, data), std::move(expect));
}

// A valid shard holding the named F32[2] tensors.
void write_shard(const std::string& path, const std::vector<std::string>& names) {
  SafetensorsWriter w;
  for (const auto& n : names) w.add(n, Tensor::zeros(DType::F32, {2}));
  w.write(path);
}

CorruptCase index_case(std::string name, std::function<void(const std::string&)> make,
                       std::vector<std::string> expect) {
  return {std::move(name), Opener::Checkpoint,
          [make = std::move(make)](const std::string& dir) {
            make(dir);
            return dir;
          },
          std::move(expect)};
}

std::string v3_config_text() {
  return read_text_file(std::string(DEEPMOE_TEST_DATA_DIR) + "/loading/deepseek_v3_config.json");
}

// config.json = the published V3 config with one edit.
CorruptCase config_case(std::string name, std::function<void(json&)> edit, std::vector<std::string> expect) {
  expect.insert(expect.begin(), "config.json");
  return {std::move(name), Opener::Config,
          [edit = std::move(edit)](const std::string& dir) {
            json j = json::parse(v3_config_text());
            edit(j);
            write_bytes(dir + "/config.json", j.dump(2));
            return dir;
          },
          std::move(expect)};
}

CorruptCase config_text_case(std::string name, std::string text, std::vector<std::string> expect) {
  expect.insert(expect.begin(), "config.json");
  return {std::move(name), Opener::Config,
          [text = std::move(text)](const std::string& dir) {
            write_bytes(dir + "/config.json", text);
            return dir;
          },
          std::move(expect)};
}

std::vector<CorruptCase> corpus() {
  std::vector<CorruptCase> c;
  const std::string ok_a = R"("a":)" + f32_entry(0, 8);
  const std::string data8(8, '\0');

  // L1: sizes of the file and of the header.
  c.push_back(file_case("empty_file", "", {"0 bytes, too small"}));
  c.push_back(file_case("file_too_small", std::string("\x05\x00\x00", 3), {"3 bytes, too small"}));
  c.push_back(file_case("header_len_huge", u64_le(uint64_t(1) << 63) + "{}", {"exceeds the limit"}));
  c.push_back(file_case("header_len_all_ones", u64_le(~uint64_t(0)) + "{}", {"exceeds the limit"}));
  c.push_back(file_case("header_len_past_eof", u64_le(1000) + "{\"a\":1}", {"runs past the end"}));
  c.push_back(file_case("header_len_zero", u64_le(0) + data8, {"does not start with '{'"}));
  // L2: text, JSON, object, duplicates, metadata.
  c.push_back(header_case("header_not_json", R"({"a": [1, 2)", "", {"not valid JSON"}));
  c.push_back(header_case("header_not_object", "[1, 2]", "", {"does not start with '{'"}));
  c.push_back(header_case("header_not_utf8", "{\"a\xff\xfe\":" + f32_entry(0, 8) + "}", data8, {"not valid UTF-8"}));
  c.push_back(header_case("header_overlong_utf8", "{\"\xc0\xaf\":" + f32_entry(0, 8) + "}", data8,
                          {"not valid UTF-8"}));
  c.push_back(header_case("header_trailing_garbage", "{" + ok_a + "}<html>", data8, {"not valid JSON"}));
  // nlohmann stops at a NUL as if the input ended; the bytes after it would be a second, unchecked payload
  // (polyglot files, reliability.md §1 L6).
  c.push_back(header_case("header_nul_padding", "{" + ok_a + "}" + std::string(3, '\0'), data8,
                          {"NUL byte at header offset"}));
  c.push_back(header_case("header_nul_then_payload", "{" + ok_a + "}" + std::string(1, '\0') + "<script>", data8,
                          {"NUL byte"}));
  c.push_back(header_case("duplicate_tensor_name", "{" + ok_a + "," + ok_a + "}", data8 + data8,
                          {"'a'", "twice"}));
  c.push_back(header_case("metadata_not_string", R"({"__metadata__":{"format":1},)" + ok_a + "}", data8,
                          {"__metadata__.format", "must be a string"}));
  c.push_back(header_case("metadata_not_object", R"({"__metadata__":"pt",)" + ok_a + "}", data8,
                          {"__metadata__", "object mapping strings"}));
  c.push_back(header_case("entry_not_object", R"({"a":5})", "", {"'a'", "not a JSON object"}));
  c.push_back(header_case("entry_unexpected_field",
                          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", data8,
                          {"'a'", "'extra'", "unexpected field"}));
  // L5: dtype.
  c.push_back(header_case("unknown_dtype", R"({"w":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", data8,
                          {"'w'", "'dtype'", "unknown dtype \"F7\""}));
  c.push_back(header_case("unsupported_dtype", R"({"w":{"dtype":"F8_E8M0","shape":[8],"data_offsets":[0,8]}})",
                          data8, {"'w'", "unsupported dtype \"F8_E8M0\""}));
  c.push_back(header_case("dtype_not_string", R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", data8,
                          {"'w'", "'dtype'", "expected a string"}));
  c.push_back(header_case("missing_dtype_field", R"({"w":{"shape":[2],"data_offsets":[0,8]}})", data8,
                          {"'w'", "'dtype'", "missing"}));
  // L4: shape.
  c.push_back(header_case("shape_negative", R"({"w":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})", data8,
                          {"'w'", "'shape'", "-1 is not a non-negative integer"}));
  c.push_back(header_case("shape_not_array", R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", data8,
                          {"'w'", "'shape'", "expected an array"}));
  c.push_back(header_case("shape_float", R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", data8,
                          {"'w'", "'shape'", "not a non-negative integer"}));
  c.push_back(header_case("missing_shape_field", R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", data8,
                          {"'w'", "'shape'", "missing"}));
  c.push_back(header_case("shape_overflow",
                          R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", data8,
                          {"'w'", "'shape'", "overflows"}));
  c.push_back(header_case("shape_empty_but_strides_overflow",
                          R"({"w":{"dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", "",
                          {"'w'", "'shape'", "strides past 2^63"}));
  c.push_back(header_case("shape_bytes_overflow",
                          R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", data8,
                          {"'w'", "'shape'", "overflows 64-bit"}));
  c.push_back(header_case("shape_rank_too_large",
                          R"({"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", "x",
                          {"'w'", "rank 9 exceeds"}));
  c.push_back(header_case("size_mismatch_shape_vs_offsets", "{\"w\":" + f32_entry(0, 8, "[3]") + "}", data8,
                          {"'w'", "'data_offsets'", "holds 8 bytes, but shape [3] of F32 needs 12"}));
  // L3: offsets.
  c.push_back(header_case("missing_offsets_field", R"({"w":{"dtype":"F32","shape":[2]}})", data8,
                          {"'w'", "'data_offsets'", "missing"}));
  c.push_back(header_case("offsets_not_pair", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}})",
                          data8, {"'w'", "'data_offsets'", "two non-negative integers"}));
  c.push_back(header_case("offsets_negative", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data8,
                          {"'w'", "'data_offsets'", "two non-negative integers"}));
  c.push_back(header_case("offsets_reversed", "{\"w\":" + f32_entry(8, 0) + "}", data8,
                          {"'w'", "end 0 is before begin 8"}));
  c.push_back(header_case("offsets_out_of_bounds",
                          R"({"w":{"dtype":"U8","shape":[274877906944],"data_offsets":[0,274877906944]}})", data8,
                          {"'w'", "run past the 8-byte data section"}));
  c.push_back(header_case("offsets_u64_max",
                          R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,)"
                          R"(18446744073709551615]}})",
                          data8, {"'w'", "run past"}));
  c.push_back(header_case("offsets_overlap", "{\"a\":" + f32_entry(0, 8) + ",\"b\":" + f32_entry(4, 12) + "}",
                          std::string(12, '\0'), {"'b'", "overlap tensor 'a'"}));
  {
    // Many tensors aliasing one small region (safetensors attacks/README.md, Proposal 4).
    std::string h = "{";
    for (int i = 0; i < 50; ++i) h += (i ? "," : "") + std::string("\"t") + std::to_string(i) + "\":" + f32_entry(0, 8);
    c.push_back(header_case("offsets_alias_dos", h + "}", data8, {"overlap tensor"}));
  }
  c.push_back(header_case("offsets_gap", "{\"a\":" + f32_entry(0, 8) + ",\"b\":" + f32_entry(12, 20) + "}",
                          std::string(20, '\0'), {"'b'", "gap of 4 unused bytes"}));
  c.push_back(header_case("offsets_not_from_zero", "{\"a\":" + f32_entry(4, 12) + "}", std::string(12, '\0'),
                          {"'a'", "gap of 4 unused bytes"}));
  c.push_back(header_case("data_not_covering_eof", "{" + ok_a + "}", data8 + "trailing", {"'a'", "not covered"}));
  c.push_back(header_case("data_after_empty_header", "{}", data8, {"not covered"}));

  // Checkpoint folders.
  c.push_back(index_case("checkpoint_empty_folder", [](const std::string&) {},
                         {"no model.safetensors or model.safetensors.index.json"}));
  c.push_back(index_case(
      "index_missing_shard",
      [](const std::string& d) {
        write_shard(d + "/s1.safetensors", {"a"});
        write_bytes(d + "/model.safetensors.index.json",
                    R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
      },
      {"model.safetensors.index.json", "'b'", "\"s2.safetensors\" listed in the index does not exist"}));
  c.push_back({"index_traversal", Opener::Checkpoint,
               [](const std::string& d) {
                 // A valid shard one level above the model folder: reachable only through "../".
                 std::filesystem::create_directories(d + "/model");
                 write_shard(d + "/outside.safetensors", {"a"});
                 write_bytes(d + "/model/model.safetensors.index.json",
                             R"({"weight_map":{"a":"../outside.safetensors"}})");
                 return d + "/model";
               },
               {"model.safetensors.index.json", "'a'", "\"../outside.safetensors\" is not a plain file name"}});
  c.push_back(index_case(
      "index_absolute_path",
      [](const std::string& d) {
        write_bytes(d + "/model.safetensors.index.json", R"({"weight_map":{"a":"/etc/passwd"}})");
      },
      {"model.safetensors.index.json", "'a'", "not a plain file name"}));
  c.push_back(index_case(
      "index_tensor_not_in_shard",
      [](const std::string& d) {
        write_shard(d + "/s1.safetensors", {"a"});
        write_bytes(d + "/model.safetensors.index.json",
                    R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}})");
      },
      {"model.safetensors.index.json", "'b'", "does not contain it"}));
  c.push_back(index_case(
      "index_tensor_in_two_shards",
      [](const std::string& d) {
        write_shard(d + "/s1.safetensors", {"a", "b"});
        write_shard(d + "/s2.safetensors", {"b", "c"});
        write_bytes(d + "/model.safetensors.index.json",
                    R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"}})");
      },
      {"s2.safetensors", "'b'", "in two shards"}));
  c.push_back(index_case(
      "index_tensor_unlisted",
      [](const std::string& d) {
        write_shard(d + "/s1.safetensors", {"a", "hidden"});
        write_bytes(d + "/model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors"}})");
      },
      {"s1.safetensors", "'hidden'", "not listed in the index"}));
  c.push_back(index_case(
      "index_duplicate_key",
      [](const std::string& d) {
        write_shard(d + "/s1.safetensors", {"a"});
        write_bytes(d + "/model.safetensors.index.json",
                    R"({"weight_map":{"a":"s1.safetensors","a":"s1.safetensors"}})");
      },
      {"model.safetensors.index.json", "\"a\" twice"}));
  c.push_back(index_case(
      "index_not_json",
      [](const std::string& d) { write_bytes(d + "/model.safetensors.index.json", "{\"weight_map\": {"); },
      {"model.safetensors.index.json", "not valid JSON"}));
  c.push_back(index_case(
      "index_weight_map_not_object",
      [](const std::string& d) { write_bytes(d + "/model.safetensors.index.json", R"({"weight_map":["a"]})"); },
      {"model.safetensors.index.json", "'weight_map'", "expected a non-empty object"}));
  c.push_back(index_case(
      "index_shard_not_string",
      [](const std::string& d) { write_bytes(d + "/model.safetensors.index.json", R"({"weight_map":{"a":3}})"); },
      {"model.safetensors.index.json", "'a'", "shard must be a string"}));
  c.push_back(index_case(
      "index_shard_corrupt",
      [](const std::string& d) {
        write_bytes(d + "/s1.safetensors", "\x01\x02");
        write_bytes(d + "/model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors"}})");
      },
      {"s1.safetensors", "too small"}));
  c.push_back(index_case(
      "single_file_corrupt", [](const std::string& d) { write_bytes(d + "/model.safetensors", u64_le(64)); },
      {"model.safetensors", "runs past the end"}));

  // config.json (reliability.md §1 G5: every array-sizing value bounded).
  c.push_back(config_case("config_unknown_arch", [](json& j) { j["architectures"] = {"LlamaForCausalLM"}; },
                          {"'architectures'", "unsupported architecture \"LlamaForCausalLM\""}));
  c.push_back(config_case("config_missing_arch", [](json& j) { j.erase("architectures"); },
                          {"'architectures'", "missing required field"}));
  c.push_back(config_case("config_negative_layers", [](json& j) { j["num_hidden_layers"] = -1; },
                          {"'num_hidden_layers'", "value -1 is outside the supported range"}));
  c.push_back(config_case("config_huge_layers", [](json& j) { j["num_hidden_layers"] = 100000; },
                          {"'num_hidden_layers'", "outside the supported range [1, 1024]"}));
  c.push_back(config_case("config_wrong_type", [](json& j) { j["hidden_size"] = "7168"; },
                          {"'hidden_size'", "expected an integer, got a string"}));
  c.push_back(config_case("config_float_for_int", [](json& j) { j["num_attention_heads"] = 128.5; },
                          {"'num_attention_heads'", "expected an integer, got a floating-point number"}));
  c.push_back(config_case("config_null_required", [](json& j) { j["hidden_size"] = nullptr; },
                          {"'hidden_size'", "must not be null"}));
  c.push_back(config_case("config_missing_field", [](json& j) { j.erase("vocab_size"); },
                          {"'vocab_size'", "missing required field"}));
  c.push_back(config_case("config_uint64_max", [](json& j) { j["vocab_size"] = ~uint64_t(0); },
                          {"'vocab_size'", "too large"}));
  c.push_back(config_case("config_huge_vocab", [](json& j) { j["vocab_size"] = int64_t(1) << 40; },
                          {"'vocab_size'", "outside the supported range"}));
  c.push_back(config_case("config_huge_experts", [](json& j) { j["n_routed_experts"] = 1 << 20; },
                          {"'n_routed_experts'", "outside the supported range [1, 4096]"}));
  c.push_back(config_case("config_bad_fp8_block",
                          [](json& j) { j["quantization_config"]["weight_block_size"] = {64, 64}; },
                          {"'quantization_config.weight_block_size'", "unsupported value [64,64]"}));
  c.push_back(config_case("config_bad_fp8_fmt", [](json& j) { j["quantization_config"]["fmt"] = "e5m2"; },
                          {"'quantization_config.fmt'", "unsupported value \"e5m2\""}));
  c.push_back(config_case("config_bad_quant_method",
                          [](json& j) { j["quantization_config"]["quant_method"] = "awq"; },
                          {"'quantization_config.quant_method'", "unsupported value \"awq\""}));
  c.push_back(config_case("config_bad_scoring_func", [](json& j) { j["scoring_func"] = "relu"; },
                          {"'scoring_func'", "unsupported value \"relu\""}));
  c.push_back(config_case("config_bad_topk_method", [](json& j) { j["topk_method"] = "random"; },
                          {"'topk_method'", "unsupported value \"random\""}));
  c.push_back(config_case("config_bad_rope_type", [](json& j) { j["rope_scaling"]["type"] = "linear"; },
                          {"'rope_scaling.type'", "unsupported rope scaling type \"linear\""}));
  c.push_back(config_case("config_rope_factor_nan_string", [](json& j) { j["rope_scaling"]["factor"] = "NaN"; },
                          {"'rope_scaling.factor'", "expected a number, got a string"}));
  c.push_back(config_case("config_groups_not_dividing", [](json& j) { j["n_group"] = 7; },
                          {"'n_group'", "do not split into 7 equal groups"}));
  c.push_back(config_case("config_topk_group_too_big", [](json& j) { j["topk_group"] = 9; },
                          {"'topk_group'", "more than n_group 8"}));
  c.push_back(config_case("config_experts_per_tok_too_big", [](json& j) { j["num_experts_per_tok"] = 300; },
                          {"'num_experts_per_tok'", "more than n_routed_experts 256"}));
  c.push_back(config_case("config_experts_per_tok_past_groups", [](json& j) { j["num_experts_per_tok"] = 129; },
                          {"'num_experts_per_tok'", "exceeds the 128 experts"}));
  c.push_back(config_case("config_eos_outside_vocab", [](json& j) { j["eos_token_id"] = 129280; },
                          {"'eos_token_id'", "outside the supported range [0, 129279]"}));
  c.push_back(config_case("config_odd_rope_dim", [](json& j) { j["qk_rope_head_dim"] = 63; },
                          {"'qk_rope_head_dim'", "must be even"}));
  c.push_back(config_case("config_dense_layers_past_end", [](json& j) { j["first_k_dense_replace"] = 62; },
                          {"'first_k_dense_replace'", "outside the supported range [0, 61]"}));
  c.push_back(config_case("config_bad_hidden_act", [](json& j) { j["hidden_act"] = "gelu"; },
                          {"'hidden_act'", "unsupported value \"gelu\""}));
  c.push_back(config_case("config_kv_heads_differ", [](json& j) { j["num_key_value_heads"] = 8; },
                          {"'num_key_value_heads'", "must equal num_attention_heads"}));
  c.push_back(config_case("config_negative_eps", [](json& j) { j["rms_norm_eps"] = -1e-6; },
                          {"'rms_norm_eps'", "outside the supported range"}));
  c.push_back(config_text_case("config_not_json", "{\"architectures\": [", {"not valid JSON"}));
  c.push_back(config_text_case("config_nul_then_garbage", std::string("{}\0{\"x\": 1}", 12), {"NUL byte"}));
  c.push_back(config_text_case("config_top_level_array", "[1, 2, 3]", {"not a JSON object"}));
  return c;
}

// gtest prints a parameter in ctest's test names; the case name instead of its bytes.
void PrintTo(const CorruptCase& c, std::ostream* os) { *os << c.name; }

class CorruptCorpus : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(CorruptCorpus, GivesANamedErrorNeverACrash) {
  const CorruptCase& cc = GetParam();
  TempDir dir;
  std::string target = cc.make(dir.path());
  std::string message;
  try {
    switch (cc.opener) {
      case Opener::File:
        SafetensorsFile::open(target);
        break;
      case Opener::Checkpoint:
        Checkpoint::open(target);
        break;
      case Opener::Config:
        load_model_config(target);
        break;
    }
    FAIL() << "no error for " << cc.name;
  } catch (const Error& e) {
    message = e.what();
  }
  // The full path of the offending file (all cases write inside the per-test folder).
  EXPECT_NE(message.find(dir.path()), std::string::npos) << message;
  for (const auto& s : cc.expect) EXPECT_NE(message.find(s), std::string::npos) << "missing \"" << s << "\" in: " << message;

  // The in-memory parser (the fuzz entry point) gives the same error for the same bytes.
  if (cc.opener == Opener::File) {
    std::string bytes = read_bytes(target);
    try {
      parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), target);
      FAIL() << "in-memory parse accepted " << cc.name;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Loading, CorruptCorpus, ::testing::ValuesIn(corpus()),
                         [](const ::testing::TestParamInfo<CorruptCase>& info) { return info.param.name; });

TEST(CorruptCorpus, HasAtLeastSixtyDistinctNamedCases) {
  std::set<std::string> names;
  for (const auto& c : corpus()) names.insert(c.name);
  EXPECT_EQ(names.size(), corpus().size());
  EXPECT_GE(names.size(), 60u);
}

// Thousands of random damaged variants of a valid file (bytes flipped, header digits changed, truncated,
// extended): each must parse or throw deepmoe::Error; anything else (a crash, an ASan report, another exception
// type) fails. Deterministic seed, so a failure reproduces.
TEST(CorruptCorpus, SeededMutationsNeverCrash) {
  TempDir dir;
  SafetensorsWriter w;
  w.add("model.embed_tokens.weight", Tensor::zeros(DType::BF16, {4, 3}));
  w.add("scale", Tensor::zeros(DType::F32, {}));
  w.add("empty", Tensor::zeros(DType::F8_E4M3, {0, 2}));
  w.add("w", Tensor::zeros(DType::F8_E4M3, {2, 5}));
  w.set_metadata("format", "pt");
  w.write(dir.file("ok.safetensors"));
  const std::string valid = read_bytes(dir.file("ok.safetensors"));
  std::mt19937_64 rng(20240611);
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string b = valid;
    int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 5) {
        case 0:  // random byte anywhere
          b[rng() % b.size()] = char(rng());
          break;
        case 1: {  // a digit in the header becomes another digit (offsets, shapes, lengths)
          if (b.size() <= 8) break;
          size_t pos = 8 + rng() % (b.size() - 8);
          if (b[pos] >= '0' && b[pos] <= '9') b[pos] = char('0' + rng() % 10);
          break;
        }
        case 2:  // truncate
          b.resize(rng() % (b.size() + 1));
          break;
        case 3:  // append
          b.append(1 + rng() % 16, char(rng()));
          break;
        default:  // header length byte
          if (b.size() >= 8) b[rng() % 8] = char(rng());
          break;
      }
      if (b.empty()) break;
    }
    try {
      SafetensorsHeader h = parse_safetensors_header(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "m");
      // Accepted: every tensor must then lie inside the buffer.
      for (const auto& t : h.tensors) {
        ASSERT_LE(h.data_offset + t.end, b.size());
        Tensor v = Tensor::view(t.dtype, t.shape, b.data() + h.data_offset + t.begin);
        ASSERT_EQ(v.nbytes(), t.end - t.begin);
      }
      ++accepted;
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(accepted, 0);  // some mutations (e.g. inside tensor data) leave a valid file
}

}  // namespace
