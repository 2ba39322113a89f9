// The trained model as a Hugging Face checkpoint folder that every deepmoe command loads unchanged (DESIGN.md §5):
// config.json (with quantization_config), model.safetensors in checkpoint/checkpoint_layout.h's names — projections
// E4M3 with 128x128 `weight_scale_inv` blocks, embedding / head / norms / gate / eh_proj BF16, the correction
// bias F32, the MTP layer `model.layers.{num_hidden_layers}` with its stored copies of the shared embedding and
// head — and the tokenizer files.
#pragma once

#include <string>

#include "train/param_store.h"

namespace deepmoe {

// tokenizer_dir: folder whose tokenizer.json / tokenizer_config.json are copied ("" = none).
void export_hf_checkpoint(const ParamStore<float>& ps, const std::string& dir, bool fp8,
                          const std::string& tokenizer_dir);

// The parameters an exported checkpoint holds, dequantized to FP32: exactly the values inference multiplies.
ParamStore<float> import_hf_checkpoint(const std::string& dir);

}  // namespace deepmoe
