// `deepmoe train-tokenizer FILE --vocab N --out DIR`: a byte-level BPE tokenizer learned from a text file
// (tokenizer/bpe_trainer.h), written as tokenizer.json + tokenizer_config.json with DeepSeek-V3's special tokens
// and chat template, so a model trained on that text has a tokenizer every command loads.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <memory>

#include "bundled_chat_template.h"
#include "command.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::tools {
namespace {

struct TrainTokenizerArgs {
  std::string file, out;
  std::string chat_template_from = bundled_chat_template_dir();
  BpeTrainerOptions options;
};

void run_train_tokenizer(const TrainTokenizerArgs& args) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string text;
  try {
    text = read_text_file(args.file);
    const TrainedBpe bpe = train_bpe(text, args.options);
    write_bpe_tokenizer(bpe, chat_template_of(args.chat_template_from), args.out);
    // Read back through the loader every command uses, so a file it would reject is never left behind silently.
    const auto tok = Tokenizer::load(args.out);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("wrote %s: vocabulary %lld (%zu special + 256 bytes + %zu merges); %s: %lld bytes, %lld pieces -> "
                "%lld tokens (%.2f bytes/token), %.1f s\n",
                args.out.c_str(), (long long)tok->vocab_size(), bpe.specials.size(), bpe.merges.size(),
                args.file.c_str(), (long long)bpe.text_bytes, (long long)bpe.pieces, (long long)bpe.tokens,
                double(bpe.text_bytes) / double(std::max<int64_t>(bpe.tokens, 1)), seconds);
  } catch (const Error& e) {
    throw e.with_file(args.file);
  }
}

CommandRegistration registration{
    {"train-tokenizer", "Learn a byte-level BPE tokenizer from a text file (tokenizer.json + tokenizer_config.json)",
     [](CLI::App& sub) {
       auto args = std::make_shared<TrainTokenizerArgs>();
       sub.add_option("file", args->file, "UTF-8 text file to learn from")->required();
       sub.add_option("--vocab", args->options.vocab_size,
                      "Vocabulary size: special tokens + 256 byte tokens + merges (fewer when pairs run out)")
           ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
           ->capture_default_str();
       sub.add_option("--min-pair-count", args->options.min_pair_count,
                      "Never merge a pair seen fewer times than this")
           ->check(CLI::PositiveNumber)
           ->capture_default_str();
       sub.add_option("--chat-template-from", args->chat_template_from,
                      "Folder whose tokenizer_config.json chat_template is copied (\"\" for none)")
           ->capture_default_str();
       sub.add_option("--out,-o", args->out, "Output folder (created if missing)")->required();
       sub.callback([args] { run_train_tokenizer(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
