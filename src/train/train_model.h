// The DeepSeek-V3 model as training runs it: forward over B windows of T tokens, the losses of paper §2 (next-
// token cross-entropy, the MTP module's next-next-token cross-entropy weighted by λ, the optional sequence-wise
// balance loss α), and the hand-written backward pass into the parameters' gradients. The forward is the one
// inference runs (runtime/executor.h over model/transformer.h): same weights, same gate, same MTP input convention (the main model's
// last hidden state before the final norm, the embedding of t_{i+1} first and zeroed at position 0).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/param_store.h"
#include "train/train_math.h"

namespace deepmoe {

class ThreadPool;

struct TrainBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;  // [B, T + 1]: inputs are [:, :T], next-token targets [:, 1:]
};

// What the MTP module's prediction for token i+2 is trained toward.
enum class MtpTarget {
  Data,       // the text's token t_{i+2}: cross-entropy (the paper's MTP objective)
  MainModel,  // the main model's own distribution at position i+1, i.e. what a greedy (or sampling) speculative
              // verifier accepts: KL(main ‖ MTP), the main logits a constant. Needs main_frozen.
};

struct TrainSettings {
  Precision precision = Precision::FP32;
  double mtp_weight = 0.3;     // λ
  double balance_alpha = 0.0;  // α of the sequence-wise balance loss (0 = off)
  MtpTarget mtp_target = MtpTarget::Data;
  // Only the MTP module's own parameters (model.layers.{num_hidden_layers}.*) receive gradients; the main model,
  // the shared embedding and the head are not differentiated at all (their Param::frozen must be set).
  bool main_frozen = false;
};

struct StepResult {
  double objective = 0;                  // main + λ·mtp + balance: what the gradients are of
  double main_loss = 0, mtp_loss = 0;    // mean cross-entropies (nats); mtp_loss is the mean KL for MtpTarget::MainModel
  double balance_loss = 0;
  int64_t main_tokens = 0, mtp_tokens = 0;
  // Greedy MTP drafts on these windows: the MTP module's argmax for token i+2 against the main model's argmax at
  // position i+1 (what a speculative decoder's verify step accepts at temperature 0), and against the data.
  int64_t mtp_drafts = 0, mtp_accepted = 0, mtp_correct = 0;
  std::vector<std::vector<int64_t>> expert_load;  // [MoE layer (MTP block last)][expert] tokens routed this step
};

template <class R>
class TrainModel {
 public:
  // Throws Error naming the config field the trainer does not implement (it trains DeepSeek-V3's architecture:
  // sigmoid gate with noaux_tc, at most one MTP module, untied embeddings).
  explicit TrainModel(const ModelConfig& config);
  static void check_config(const ModelConfig& config);
  // Whether a parameter belongs to the MTP module itself (not the shared embedding and head).
  static bool is_mtp_parameter(const ModelConfig& config, const std::string& name);

  // Forward (and, with backward, gradients accumulated into ps). logits: when given, receives the main model's
  // logits [B·T, vocab]; mtp_logits the MTP module's [B·(T−1), vocab].
  StepResult run(ParamStore<R>& ps, const TrainBatch& batch, const TrainSettings& settings, bool backward,
                 ThreadPool* pool, std::vector<R>* logits = nullptr, std::vector<R>* mtp_logits = nullptr) const;

 private:
  ModelConfig config_;
};

}  // namespace deepmoe
