// `deepmoe train`: the training loop. Each step draws B random windows of T + 1 tokens, runs the model's forward
// and backward (train_model.h), clips the gradient norm, applies AdamW with the warmup + cosine schedule, and
// moves each MoE layer's e_score_correction_bias by ±γ from that step's expert load (paper §2.1.2: down when an
// expert got more than the mean, up when less). Validation loss over the data's held-out tail is measured every
// eval_every steps. Checkpoints (the HF folder, trainer_state.safetensors for --resume, metrics.jsonl and
// loss_curve.svg) are written every checkpoint_every steps and at the end; a resumed run continues bit-exactly.
// With mtp_only the run fine-tunes the MTP module of an exported checkpoint (init_from) with the main model frozen,
// typically toward the main model's own next-position distribution (what speculative decoding's verifier accepts).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/train_math.h"
#include "train/train_model.h"

namespace deepmoe {

struct TrainerOptions {
  std::string data_path;      // UTF-8 text file
  std::string tokenizer_dir;  // tokenizer.json + tokenizer_config.json (copied into the output)
  ModelConfig model;          // vocab_size must cover the tokenizer
  int64_t steps = 1000, batch = 8, seq_len = 128, warmup = 50;
  double lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.1, clip = 1.0, beta1 = 0.9, beta2 = 0.95;
  double bias_gamma = 1e-3;    // auxiliary-loss-free bias update speed γ (0 = off)
  double balance_alpha = 0.0;  // sequence-wise balance loss α (0 = off)
  double mtp_weight = 0.3;     // λ
  double init_std = 0.02, val_fraction = 0.1;
  Precision precision = Precision::FP32;
  uint64_t seed = 1;
  int64_t eval_every = 100, eval_windows = 64, checkpoint_every = 0;  // 0: only at the end
  bool fp8_checkpoint = true;  // E4M3 projections in the exported folder (else BF16)
  // Fine-tuning: start from this exported checkpoint folder's weights instead of a random initialization.
  std::string init_from;
  // Train only the MTP module (model.layers.{num_hidden_layers}.*); the main model, the shared embedding and the
  // head stay exactly as they are, so the exported main-model tensors are those of init_from, byte for byte.
  bool mtp_only = false;
  MtpTarget mtp_target = MtpTarget::Data;  // MainModel needs mtp_only

  std::string to_json() const;
  static TrainerOptions from_json(const std::string& text, const std::string& path_for_errors);
};

struct RunControl {
  std::string out_dir;
  bool resume = false;        // continue from out_dir/trainer_state.safetensors with its saved options
  int threads = 0;
  int64_t stop_after = -1;    // stop (writing a checkpoint) after this step, as an interruption would
  std::FILE* log = stderr;    // progress lines (a redrawn line on a terminal)
  std::vector<std::string> overlay;  // other runs' folders whose curves loss_curve.svg overlays
};

struct TrainSummary {
  int64_t steps = 0;
  double train_loss = 0;           // mean main loss over the last 10% of steps
  double val_loss = 0, val_mtp_loss = 0;
  double mtp_acceptance = 0, mtp_accuracy = 0;  // greedy MTP drafts on the validation windows
  double unigram_entropy = 0;      // nats/token on the training part
  double load_max_over_mean = 0;   // mean over the last 10% of steps and the MoE layers
  double seconds = 0, tokens_per_second = 0, gemm_fraction_of_peak = 0;
  int64_t parameters = 0;
};

TrainSummary train(const TrainerOptions& options, const RunControl& control);

const char* mtp_target_name(MtpTarget target);
MtpTarget parse_mtp_target(const std::string& name);  // data | main, else Error naming --mtp-target

// Trainer presets: "shakespeare" (the bundled default model's shape) and "tiny" (tests). Vocabulary set later.
ModelConfig train_preset(const std::string& name);

}  // namespace deepmoe
