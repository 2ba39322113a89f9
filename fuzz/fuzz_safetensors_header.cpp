// libFuzzer target: arbitrary bytes as a whole safetensors file (as safetensors' own fuzz_target_1 does).
// The parser must either accept the file, with every tensor inside the buffer,
// or throw deepmoe::Error; any other exception, crash or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "core/tensor.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    deepmoe::SafetensorsHeader h = deepmoe::parse_safetensors_header(data, size, "fuzz.safetensors");
    // Accepted: read every byte each tensor claims, so ASan sees any offset the checks let through.
    unsigned sum = 0;
    for (const deepmoe::TensorInfo& t : h.tensors) {
      if (h.data_offset + t.end > size || t.end - t.begin != uint64_t(t.numel()) * deepmoe::dtype_size_bytes(t.dtype))
        std::abort();
      for (uint64_t i = t.begin; i < t.end; ++i) sum += data[h.data_offset + i];
      // The shape must also make a valid Tensor (strides within int64).
      deepmoe::Tensor view = deepmoe::Tensor::view(t.dtype, t.shape, const_cast<uint8_t*>(data + h.data_offset + t.begin));
      if (uint64_t(view.nbytes()) != t.end - t.begin) std::abort();
    }
    volatile unsigned sink = sum;
    (void)sink;
  } catch (const deepmoe::Error&) {
  }
  return 0;
}
