// DeepSeek-V3's chat template source as the bundled tokenizer_config.json holds it (assets/tokenizer), for
// tokenizers the `train-tokenizer` and `train` commands write: `chat` then renders turns exactly as for V3.
#pragma once

#include <string>

namespace deepmoe::tools {

// The "chat_template" string of dir/tokenizer_config.json; "" when dir is empty. Error naming the file otherwise.
std::string chat_template_of(const std::string& dir);
// The bundled DeepSeek-V3 template's folder.
inline std::string bundled_chat_template_dir() { return DEEPMOE_ASSETS_DIR "/tokenizer"; }

}  // namespace deepmoe::tools
