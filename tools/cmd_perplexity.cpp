// `deepmoe perplexity -m DIR -f TEXT [--ctx N]`: perplexity over a text the way llama.cpp's perplexity tool
// computes it (tools/perplexity): the tokenized text is cut into chunks of --ctx tokens, each chunk is evaluated
// from an empty cache with its first token replaced by BOS, and only the second half of each chunk is scored
// (every scored token then has at least ctx/2 tokens of context). Prints the running PPL after each chunk and a
// final estimate with its standard error.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "command.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "engine_options.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::tools {
namespace {

struct PerplexityArgs {
  EngineArgs engine;
  std::string file;
  int64_t ctx = 512;
  int64_t max_chunks = 0;
  int64_t parallel = 4;
};

// -log softmax(logits)[target], in double.
double negative_log_likelihood(const float* logits, int64_t vocab, int32_t target) {
  float max_logit = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - max_logit);
  return std::log(sum) - (double(logits[target]) - max_logit);
}

void perplexity_on_leader(const PerplexityArgs& args, LoadedModel& loaded);

void run_perplexity(const PerplexityArgs& args) {
  // The weights are mapped, not read, so loading first costs little even when the text turns out unusable.
  EngineJob job = open_engine_job(args.engine, /*with_tokenizer=*/true, [](ExecutorOptions& o) { o.load_mtp = false; });
  run_engine_job(job, [&] { perplexity_on_leader(args, job.model); });
}

// Rank 0's part: reads and scores the text (the other ranks follow its steps).
void perplexity_on_leader(const PerplexityArgs& args, LoadedModel& loaded) {
  const int64_t ctx = args.ctx;
  Engine& model = *loaded.engine;
  const ModelConfig& config = model.config();
  if (config.max_position_embeddings > 0 && ctx > config.max_position_embeddings)
    throw Error("--ctx " + std::to_string(ctx) + " exceeds the model's context of " +
                std::to_string(config.max_position_embeddings) + " tokens (max_position_embeddings in " +
                loaded.dir + "/config.json)");
  const std::string text = read_text_file(args.file);
  const Tokenizer* tokenizer = loaded.tokenizer.get();
  const std::vector<int32_t> tokens = tokenizer->encode(text, /*add_special=*/false, /*parse_special=*/false);
  int64_t n_chunks = int64_t(tokens.size()) / ctx;
  if (args.max_chunks > 0) n_chunks = std::min(n_chunks, args.max_chunks);
  if (n_chunks < 1)
    throw Error("the text has " + std::to_string(tokens.size()) + " tokens; at least --ctx = " +
                    std::to_string(ctx) + " are needed for one chunk",
                {args.file, "", ""});
  const int64_t vocab = config.vocab_size;
  if (tokenizer->vocab_size() > vocab)
    throw Error("the tokenizer has " + std::to_string(tokenizer->vocab_size()) + " tokens but the model's vocab_size is " +
                    std::to_string(vocab),
                {loaded.dir, "", "vocab_size"});
  const int32_t bos = tokenizer->bos_id();
  const int64_t first = ctx / 2;  // llama.cpp: score positions [ctx/2, ctx - 1) predicting the next token
  std::fprintf(stderr, "perplexity: %zu tokens, %lld chunks of %lld, scoring %lld tokens per chunk\n", tokens.size(),
               (long long)n_chunks, (long long)ctx, (long long)(ctx - 1 - first));

  double nll_sum = 0, nll_sq_sum = 0;
  int64_t count = 0;
  const auto t0 = std::chrono::steady_clock::now();
  // --parallel chunks per forward step: each from its own empty cache, so their logits are those of one chunk at
  // a time (the forward is batch-invariant) while the weights are read once per step.
  // The logits of a batch stay under 512 MiB (ctx / 2 rows of vocab floats per chunk).
  const int64_t chunk_logit_bytes = (ctx - 1 - first) * vocab * int64_t(sizeof(float));
  const int64_t parallel = std::clamp<int64_t>((int64_t(512) << 20) / std::max<int64_t>(chunk_logit_bytes, 1), 1,
                                               args.parallel);
  for (int64_t c0 = 0; c0 < n_chunks; c0 += parallel) {
    const int64_t c1 = std::min(n_chunks, c0 + parallel);
    std::vector<std::unique_ptr<EngineSequence>> seqs;
    std::vector<EngineInput> batch;
    for (int64_t c = c0; c < c1; ++c) {
      std::vector<int32_t> chunk(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx);
      if (bos >= 0) chunk[0] = bos;
      seqs.push_back(model.create_sequence());
      EngineInput in;
      in.sequence = seqs.back().get();
      in.tokens = std::move(chunk);
      for (int64_t j = first; j < ctx - 1; ++j) in.logit_indices.push_back(j);
      batch.push_back(std::move(in));
    }
    const Tensor logits = model.forward(batch);
    int64_t r = 0;
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t j : batch[size_t(c - c0)].logit_indices) {
        // The target is the text's token (not BOS) at j + 1.
        const double nll = negative_log_likelihood(logits.data<float>() + (r++) * vocab, vocab,
                                                   tokens[size_t(c * ctx + j + 1)]);
        nll_sum += nll;
        nll_sq_sum += nll * nll;
        ++count;
      }
      std::printf("[%lld]%.4f,", (long long)(c + 1), std::exp(nll_sum / double(count)));
    }
    std::fflush(stdout);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mean = nll_sum / double(count);
  // Standard error of the mean NLL, carried to PPL to first order (as llama.cpp reports it).
  const double var = std::max(0.0, nll_sq_sum / double(count) - mean * mean);
  const double ppl = std::exp(mean);
  const double ppl_err = count > 1 ? ppl * std::sqrt(var / double(count - 1)) : 0.0;
  std::printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, ppl_err);
  std::fprintf(stderr, "perplexity: %lld tokens scored in %.2f s (%.1f tokens/s evaluated)\n", (long long)count,
               seconds, double(n_chunks * ctx) / std::max(seconds, 1e-9));
}

CommandRegistration registration{
    {"perplexity", "Perplexity of a model over a text file (chunks of --ctx tokens, second half scored, as llama.cpp)",
     [](CLI::App& sub) {
       auto args = std::make_shared<PerplexityArgs>();
       add_engine_options(sub, args->engine);
       sub.add_option("-f,--file", args->file, "Text file")->required();
       sub.add_option("--ctx", args->ctx, "Tokens per chunk (at most the model's context)")->check(CLI::Range(int64_t(4), int64_t(1) << 20))->capture_default_str();
       sub.add_option("--parallel", args->parallel,
                      "Chunks evaluated together in one batch, as many as fit 512 MiB of logits (the figures do "
                      "not change; the weights are read once per batch)")
           ->check(CLI::Range(int64_t(1), int64_t(256)))
           ->capture_default_str();
       sub.add_option("--chunks", args->max_chunks, "Evaluate at most this many chunks (0 = all)")
           ->check(CLI::NonNegativeNumber);
       sub.callback([args] { run_perplexity(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
