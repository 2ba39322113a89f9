// `deepmoe train`: trains a DeepSeek-V3-architecture model on a text file (train/trainer.h) and writes a Hugging
// Face checkpoint folder every other command loads.
#include <CLI/CLI.hpp>

#include <malloc.h>

#include <cstdio>
#include <memory>

#include "bundled_chat_template.h"
#include "command.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace deepmoe::tools {
namespace {

struct TrainArgs {
  TrainerOptions options;
  RunControl control;
  std::string preset = "shakespeare", config_path, precision = "fp32", checkpoint_dtype = "fp8", resume,
      mtp_target = "data";
  int64_t vocab = 2048;
  bool checkpoint_dtype_given = false;
};

void run_train(TrainArgs& args) {
  TrainerOptions& o = args.options;
  RunControl& control = args.control;
  if (!args.resume.empty()) {
    control.out_dir = args.resume;
    control.resume = true;
  } else {
    if (o.data_path.empty()) throw Error("--data is required (a UTF-8 text file to train on)");
    if (control.out_dir.empty()) throw Error("--out is required (the checkpoint folder to write)");
    o.precision = parse_precision(args.precision);
    o.fp8_checkpoint = args.checkpoint_dtype == "fp8";
    o.mtp_target = parse_mtp_target(args.mtp_target);
    if (!o.init_from.empty()) {
      // The model, its tokenizer and its checkpoint dtype are the checkpoint's.
      if (!args.config_path.empty()) throw Error("--init takes the model from the checkpoint: drop --config");
      o.model = load_model_config(o.init_from);
      if (o.tokenizer_dir.empty()) o.tokenizer_dir = o.init_from;
      if (!args.checkpoint_dtype_given) o.fp8_checkpoint = o.model.fp8;
    } else {
      o.model = args.config_path.empty() ? train_preset(args.preset)
                                         : parse_model_config(read_text_file(args.config_path), args.config_path);
    }
    if (o.tokenizer_dir.empty()) {
      // A BPE tokenizer learned from the training text itself, written into the output folder.
      BpeTrainerOptions bpe_options;
      bpe_options.vocab_size = args.vocab;
      TrainedBpe bpe;
      try {
        bpe = train_bpe(read_text_file(o.data_path), bpe_options);
      } catch (const Error& e) {
        throw e.with_file(o.data_path);
      }
      write_bpe_tokenizer(bpe, chat_template_of(bundled_chat_template_dir()), control.out_dir);
      o.tokenizer_dir = control.out_dir;
      std::fprintf(stderr, "train: learned a BPE tokenizer of %lld tokens (%.2f bytes/token on the data)\n",
                   (long long)bpe.vocab_size(), double(bpe.text_bytes) / double(std::max<int64_t>(bpe.tokens, 1)));
    }
    if (args.config_path.empty() && o.init_from.empty()) o.model.vocab_size = Tokenizer::load(o.tokenizer_dir)->vocab_size();
  }
  // Every step allocates the same activation caches again; keep freed memory in the process instead of handing
  // it back to the kernel, which would page-fault and zero it in again on the next step.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest allowed threshold on 64-bit
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const TrainSummary s = train(o, control);
  std::printf("trained %lld steps in %.1f s: train loss %.4f, validation loss %.4f (perplexity %.2f; unigram entropy "
              "%.3f), MTP validation loss %.4f, MTP greedy draft acceptance %.3f (accuracy %.3f), expert load "
              "max/mean %.3f over the last 10%% of steps, %.0f tok/s, GEMM %.2f of FMA peak; %lld parameters -> %s\n",
              (long long)s.steps, s.seconds, s.train_loss, s.val_loss, std::exp(s.val_loss), s.unigram_entropy,
              s.val_mtp_loss, s.mtp_acceptance, s.mtp_accuracy, s.load_max_over_mean, s.tokens_per_second,
              s.gemm_fraction_of_peak, (long long)s.parameters, control.out_dir.c_str());
}

CommandRegistration registration{
    {"train", "Train a DeepSeek-V3-architecture model on a text file (writes an HF checkpoint folder)",
     [](CLI::App& sub) {
       auto args = std::make_shared<TrainArgs>();
       TrainerOptions& o = args->options;
       sub.add_option("--data", o.data_path, "UTF-8 text file; its last --val-fraction is held out for validation");
       sub.add_option("--out,-o", args->control.out_dir, "Output checkpoint folder (created if missing)");
       sub.add_option("--resume", args->resume,
                      "Continue the run in this folder from its trainer_state.safetensors (same options, bit-exact)");
       sub.add_option("--init", o.init_from,
                      "Start from this checkpoint folder's weights (its config and, unless --tokenizer, its tokenizer)");
       sub.add_flag("--mtp-only", o.mtp_only,
                    "Fine-tune only the MTP module of the --init model: the main model, embedding and head stay "
                    "byte-identical in the exported checkpoint");
       sub.add_option("--mtp-target", args->mtp_target,
                      "What the MTP module learns: data (the text's token after next) | main (the main model's "
                      "distribution at the next position, KL; needs --mtp-only)")
           ->check(CLI::IsMember({"data", "main"}))->capture_default_str();
       sub.add_option("--preset", args->preset, "Model shape: shakespeare | tiny")->capture_default_str();
       sub.add_option("--config", args->config_path, "Model config.json instead of --preset");
       sub.add_option("--tokenizer", o.tokenizer_dir,
                      "Folder with tokenizer.json (default: learn a BPE tokenizer of --vocab tokens from --data)");
       sub.add_option("--vocab", args->vocab, "Vocabulary of the learned tokenizer")->capture_default_str();
       sub.add_option("--steps", o.steps, "Optimizer steps")->check(CLI::PositiveNumber)->capture_default_str();
       sub.add_option("--batch", o.batch, "Sequences per step")->check(CLI::PositiveNumber)->capture_default_str();
       sub.add_option("--seq-len", o.seq_len, "Tokens per sequence")->check(CLI::Range(2, 65536))->capture_default_str();
       sub.add_option("--lr", o.lr, "Peak learning rate")->check(CLI::PositiveNumber)->capture_default_str();
       sub.add_option("--min-lr-ratio", o.min_lr_ratio, "Final learning rate as a fraction of the peak")
           ->check(CLI::Range(0.0, 1.0))->capture_default_str();
       sub.add_option("--warmup", o.warmup, "Linear warmup steps")->check(CLI::NonNegativeNumber)->capture_default_str();
       sub.add_option("--weight-decay", o.weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
       sub.add_option("--clip", o.clip, "Gradient norm clipping (0 = off)")->capture_default_str();
       sub.add_option("--bias-gamma", o.bias_gamma, "Auxiliary-loss-free bias update speed γ (0 = off)")
           ->check(CLI::NonNegativeNumber)->capture_default_str();
       sub.add_option("--balance-alpha", o.balance_alpha, "Sequence-wise balance loss weight α (0 = off)")
           ->check(CLI::NonNegativeNumber)->capture_default_str();
       sub.add_option("--mtp-weight", o.mtp_weight, "MTP loss weight λ")->check(CLI::NonNegativeNumber)->capture_default_str();
       sub.add_option("--init-std", o.init_std, "Initial weight standard deviation")->capture_default_str();
       sub.add_option("--val-fraction", o.val_fraction, "Held-out tail of the data")->capture_default_str();
       sub.add_option("--precision", args->precision, "Projection GEMMs: fp32 | bf16 | fp8")
           ->check(CLI::IsMember({"fp32", "bf16", "fp8"}))->capture_default_str();
       sub.add_option("--seed", o.seed, "Seed of the initialization and the data order")->capture_default_str();
       sub.add_option("--eval-every", o.eval_every, "Validation every N steps (and at the end)")->capture_default_str();
       sub.add_option("--eval-windows", o.eval_windows, "Validation windows of --seq-len tokens")->capture_default_str();
       sub.add_option("--checkpoint-every", o.checkpoint_every, "Also write the checkpoint every N steps (0 = end only)")
           ->capture_default_str();
       sub.add_option("--checkpoint-dtype", args->checkpoint_dtype, "Exported projections: fp8 | bf16 (--init: its dtype)")
           ->check(CLI::IsMember({"fp8", "bf16"}))->capture_default_str()
           ->each([args](const std::string&) { args->checkpoint_dtype_given = true; });
       sub.add_option("--stop-after", args->control.stop_after,
                      "Stop after this step with a checkpoint, as an interruption would (resume later)");
       sub.add_option("--overlay", args->control.overlay, "Other run folders whose curves loss_curve.svg also draws");
       sub.add_option("--threads", args->control.threads, "Threads (0 = all hardware threads)")
           ->check(CLI::NonNegativeNumber);
       sub.callback([args] { run_train(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
