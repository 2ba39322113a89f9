#include "train/checkpoint_export.h"

#include <filesystem>
#include <fstream>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/quantize.h"
#include "model/safetensors.h"
#include "checkpoint/safetensors_writer.h"

namespace deepmoe {

void export_hf_checkpoint(const ParamStore<float>& ps, const std::string& dir, bool fp8,
                          const std::string& tokenizer_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create folder " + dir + ": " + ec.message());
  ModelConfig config = ps.config();
  config.fp8 = fp8;
  config.torch_dtype = "bfloat16";
  SafetensorsWriter writer;
  const std::vector<TensorSpec> layout = checkpoint_layout(config, fp8);
  for (size_t i = 0; i < layout.size(); ++i) {
    const TensorSpec& spec = layout[i];
    if (spec.role == TensorRole::ScaleInv) continue;  // written with its weight
    const Param<float>& p = ps.at(spec.value_source);
    const std::vector<float>& v = p.value;
    if (spec.dtype == DType::F8_E4M3) {
      const int64_t n = spec.shape[0], k = spec.shape[1];
      Tensor q = Tensor::uninitialized(DType::F8_E4M3, {n, k});
      const std::vector<int64_t> scale_shape = block_scale_shape(n, k);
      Tensor s = Tensor::uninitialized(DType::F32, scale_shape);
      quantize_weight_128x128(v.data(), n, k, q.data<uint8_t>(), s.data<float>());
      writer.add(spec.name, q);
      DEEPMOE_CHECK(i + 1 < layout.size() && layout[i + 1].role == TensorRole::ScaleInv, "scale follows weight");
      writer.add(layout[i + 1].name, s);
    } else if (spec.dtype == DType::BF16) {
      Tensor t = Tensor::uninitialized(DType::BF16, spec.shape);
      convert_f32_to_bf16(v.data(), t.data<uint16_t>(), v.size());
      writer.add(spec.name, t);
    } else {
      DEEPMOE_CHECK(spec.dtype == DType::F32, "unexpected checkpoint dtype");
      Tensor t = Tensor::uninitialized(DType::F32, spec.shape);
      std::copy(v.begin(), v.end(), t.data<float>());
      writer.add(spec.name, t);
    }
  }
  writer.set_metadata("format", "pt");
  for (const char* stale : {"model.safetensors.index.json"}) fs::remove(fs::path(dir) / stale, ec);
  writer.write((fs::path(dir) / "model.safetensors").string());
  {
    const fs::path path = fs::path(dir) / "config.json";
    std::ofstream f(path, std::ios::binary);
    f << model_config_to_json(config) << '\n';
    if (!f) throw Error("cannot write " + path.string());
  }
  if (!tokenizer_dir.empty() && fs::path(tokenizer_dir) != fs::path(dir))
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(fs::path(tokenizer_dir) / name, fs::path(dir) / name, fs::copy_options::overwrite_existing, ec);
      if (ec) throw Error("cannot copy " + (fs::path(tokenizer_dir) / name).string() + ": " + ec.message());
    }
}

ParamStore<float> import_hf_checkpoint(const std::string& dir) {
  const ModelConfig config = load_model_config(dir);
  const Checkpoint ckpt = Checkpoint::open(dir, Checkpoint::Populate::Never);
  ParamStore<float> ps = ParamStore<float>::init(config, 0, 0.0);
  for (auto& p : ps.all()) {
    const std::string& name = p.spec.name;
    const Tensor t = ckpt.get(name);
    if (int64_t(t.numel()) != p.numel())
      throw Error("expected " + std::to_string(p.numel()) + " values", {dir, name, ""});
    if (t.dtype() == DType::F8_E4M3) {
      const Tensor s = ckpt.get(name.substr(0, name.size() - std::string("weight").size()) + "weight_scale_inv");
      dequantize_weight_128x128(t.data<const uint8_t>(), s.data<const float>(), p.rows(), p.cols(), p.value.data());
    } else {
      convert_to_f32(t.dtype(), t.data<const void>(), p.value.data(), p.value.size());
    }
  }
  return ps;
}

}  // namespace deepmoe
