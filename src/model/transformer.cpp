// Reads like model.py's Transformer / Block / MTP pieces (reference §1.3, §1.9); the order in which they run is
// runtime/executor.cpp's.
#include "model/transformer.h"

#include <algorithm>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "model/moe.h"

namespace deepmoe {

void linear(const ForwardContext& ctx, const float* x, int64_t T, const WeightMatrix& w, float* y) {
  if (T == 0) return;
  gemm(x, T, w, y, ctx.gemm, ctx.pool);
}

Transformer::~Transformer() = default;

int Transformer::count_moe_layers(const ModelConfig& c, const TransformerOptions& options) {
  const bool mtp = options.load_mtp && c.num_nextn_predict_layers > 0;
  int n = 0;
  for (int64_t l = 0; l < c.num_hidden_layers + (mtp ? 1 : 0); ++l) n += c.is_moe_layer(l) ? 1 : 0;
  return n;
}

std::unique_ptr<Transformer> Transformer::load(const std::string& dir, const TransformerOptions& options,
                                               const LocalExperts& local_experts) {
  std::unique_ptr<Transformer> m(new Transformer());
  m->cfg_ = load_model_config(dir);
  m->opt_ = options;
  if (options.kv_dtype != DType::F32 && options.kv_dtype != DType::BF16)
    throw Error("KV cache dtype must be F32 or BF16, got " + std::string(dtype_name(options.kv_dtype)));
  m->ckpt_ = Checkpoint::open(dir);
  m->pool_ = std::make_unique<ThreadPool>(options.threads);
  const ModelConfig& c = m->cfg_;

  const RopeParams rp = rope_params(c);
  ForwardContext& ctx = m->ctx_;
  ctx.config = &m->cfg_;
  ctx.gemm = options.gemm;
  ctx.attention = options.attention;
  ctx.pool = m->pool_.get();
  ctx.rope_freqs = rope_frequencies(rp);
  ctx.rope_amplitude = rope_amplitude(rp);
  ctx.softmax_scale = float(attention_softmax_scale(rp, int(c.qk_head_dim())));
  ctx.rms_eps = float(c.rms_norm_eps);

  m->has_mtp_ = options.load_mtp && c.num_nextn_predict_layers > 0;
  const int64_t n_blocks = c.num_hidden_layers + (m->has_mtp_ ? 1 : 0);
  for (int64_t l = 0; l < n_blocks; ++l) m->moe_layer_.push_back(c.is_moe_layer(l) ? m->n_moe_++ : -1);
  auto experts_of = [&](int64_t block) {
    const int ml = m->moe_layer_[size_t(block)];
    return ml >= 0 ? local_experts(ml) : std::vector<int>{};
  };

  m->embed_ = bind_tensor(m->ckpt_, "model.embed_tokens.weight", c.vocab_size, c.hidden_size);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) m->layers_.push_back(bind_layer(m->ckpt_, c, l, experts_of(l)));
  m->final_norm_ = load_vector(m->ckpt_, "model.norm.weight", c.hidden_size);
  if (c.tie_word_embeddings && !m->ckpt_.contains("lm_head.weight"))
    m->lm_head_ = bind_linear(m->ckpt_, "model.embed_tokens", c.vocab_size, c.hidden_size);
  else
    m->lm_head_ = bind_linear(m->ckpt_, "lm_head", c.vocab_size, c.hidden_size);
  if (m->has_mtp_) m->mtp_ = bind_mtp(m->ckpt_, c, experts_of(c.num_hidden_layers));
  return m;
}

void Transformer::check_token(int64_t token) const {
  if (token < 0 || token >= cfg_.vocab_size)
    throw Error("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                std::to_string(cfg_.vocab_size) + ")");
}

void Transformer::embed(std::span<const int32_t> tokens, float* x) const {
  for (size_t i = 0; i < tokens.size(); ++i) embedding_row(embed_, tokens[i], x + int64_t(i) * cfg_.hidden_size);
}

void Transformer::attention(const LayerWeights& w, float* x, int64_t T, const int64_t* positions,
                            const std::vector<SequenceSlice>& slices, float* h, float* scratch) const {
  const int64_t H = cfg_.hidden_size;
  rmsnorm(x, H, w.input_norm.data(), T, H, ctx_.rms_eps, h, H, ctx_.pool);
  mla_forward(ctx_, w.attn, h, T, positions, slices, scratch);
  const int64_t n = T * H;
  for (int64_t i = 0; i < n; ++i) x[i] += scratch[i];
  rmsnorm(x, H, w.post_attention_norm.data(), T, H, ctx_.rms_eps, h, H, ctx_.pool);
}

void Transformer::dense_ffn(const LayerWeights& w, const float* h, int64_t T, float* out) const {
  mlp_forward(ctx_, w.mlp, h, T, out);
}

void Transformer::mtp_input(const float* hidden, std::span<const int32_t> next_tokens, const int64_t* positions,
                            int64_t n, float* x) const {
  DEEPMOE_CHECK(has_mtp_, "this model has no MTP layer loaded");
  const int64_t H = cfg_.hidden_size;
  std::vector<float> cat(static_cast<size_t>(n * 2 * H)), e(static_cast<size_t>(H));
  const Tensor& embed = mtp_.embed.defined() ? mtp_.embed : embed_;
  for (int64_t r = 0; r < n; ++r) {
    float* row = cat.data() + r * 2 * H;
    if (positions[r] == 0) {
      std::fill(e.begin(), e.end(), 0.0f);
    } else {
      embedding_row(embed, next_tokens[size_t(r)], e.data());
    }
    rmsnorm(e.data(), H, mtp_.enorm.data(), 1, H, ctx_.rms_eps, row, H, nullptr);
    rmsnorm(hidden + r * H, H, mtp_.hnorm.data(), 1, H, ctx_.rms_eps, row + H, H, nullptr);
  }
  linear(ctx_, cat.data(), n, mtp_.eh_proj, x);
}

Tensor Transformer::logits(const float* rows, int64_t n, bool mtp_head) const {
  const int64_t H = cfg_.hidden_size;
  const std::vector<float>& norm = mtp_head ? mtp_.head_norm : final_norm_;
  const WeightMatrix& head = mtp_head && mtp_.head.data ? mtp_.head : lm_head_;
  Scratch normed(n * H);
  rmsnorm(rows, H, norm.data(), n, H, ctx_.rms_eps, normed.data(), H, ctx_.pool);
  Tensor out = Tensor::uninitialized(DType::F32, {n, cfg_.vocab_size});
  linear(ctx_, normed.data(), n, head, out.data<float>());
  return out;
}

std::unique_ptr<Sequence> Transformer::create_sequence() const {
  const ModelConfig& c = cfg_;
  auto s = std::make_unique<Sequence>();
  s->main = KvCache(c.num_hidden_layers, c.kv_lora_rank, c.qk_rope_head_dim, opt_.kv_dtype);
  s->mtp = KvCache(has_mtp_ ? 1 : 0, c.kv_lora_rank, c.qk_rope_head_dim, opt_.kv_dtype);
  return s;
}

KvPools Transformer::create_kv_pools(uint64_t budget_bytes, int64_t block_tokens) const {
  const ModelConfig& c = cfg_;
  const KvLayout main{c.num_hidden_layers, c.kv_lora_rank, c.qk_rope_head_dim, opt_.kv_dtype, block_tokens};
  KvLayout mtp = main;
  mtp.n_layers = 1;
  // Each token takes a row in every main layer and, when MTP runs, one in the MTP layer.
  const uint64_t layers = uint64_t(main.n_layers) + (has_mtp_ ? 1 : 0);
  const uint64_t main_budget = layers > 0 ? uint64_t(double(budget_bytes) * double(main.n_layers) / double(layers)) : 0;
  KvPools pools;
  pools.main = std::make_shared<KvBlockPool>(main, KvBlockPool::blocks_for_budget(main, main_budget), true);
  if (has_mtp_)
    pools.mtp = std::make_shared<KvBlockPool>(mtp, KvBlockPool::blocks_for_budget(mtp, budget_bytes - main_budget),
                                              false);
  return pools;
}

std::unique_ptr<Sequence> Transformer::create_sequence(const KvPools& pools, std::span<const int32_t> prompt) const {
  if (!pools.main) throw Error("create_sequence: no KV pool for the main layers");
  const ModelConfig& c = cfg_;
  if (pools.main->layout().n_layers != c.num_hidden_layers || pools.main->layout().latent_dim != c.kv_lora_rank ||
      pools.main->layout().rope_dim != c.qk_rope_head_dim)
    throw Error("create_sequence: the KV pool's layout is not this model's");
  auto s = std::make_unique<Sequence>();
  s->main = KvCache(pools.main);
  s->mtp = pools.mtp ? KvCache(pools.mtp)
                     : KvCache(has_mtp_ ? 1 : 0, c.kv_lora_rank, c.qk_rope_head_dim, pools.main->layout().dtype);
  if (!prompt.empty()) s->main.adopt_prefix(prompt);
  return s;
}

}  // namespace deepmoe
