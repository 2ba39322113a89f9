// The whole forward pass; reads like model.py's Transformer.forward / Block.forward (reference §1.3).
#include "model/deepseek_model.h"

#include <algorithm>
#include <unordered_set>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "model/config.h"
#include "model/mla.h"
#include "model/model_weights.h"
#include "model/moe.h"
#include "model/safetensors.h"
#include "parallel/communicator.h"
#include "parallel/expert_placement.h"
#include "parallel/moe_dispatch.h"

namespace deepmoe {

void linear(const ForwardContext& ctx, const float* x, int64_t T, const WeightMatrix& w, float* y) {
  if (T == 0) return;
  gemm(x, T, w, y, ctx.gemm, ctx.pool);
}

SequenceInput SequenceInput::last(Sequence* s, std::vector<int32_t> tokens) {
  SequenceInput in{s, std::move(tokens), {}};
  if (!in.tokens.empty()) in.logit_indices.push_back(int64_t(in.tokens.size()) - 1);
  return in;
}

SequenceInput SequenceInput::all(Sequence* s, std::vector<int32_t> tokens) {
  SequenceInput in{s, std::move(tokens), {}};
  for (size_t i = 0; i < in.tokens.size(); ++i) in.logit_indices.push_back(int64_t(i));
  return in;
}

struct DeepseekModel::Impl {
  ModelConfig cfg;
  ModelOptions opt;
  Checkpoint ckpt;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Communicator> own_comm;
  Communicator* comm = nullptr;
  ExpertPlacement placement;
  ForwardContext ctx;
  Tensor embed;                     // [vocab, hidden]
  std::vector<LayerWeights> layers;  // num_hidden_layers
  std::vector<int> placement_layer;  // per layer (MTP block last): index among MoE layers, -1 if dense
  std::vector<float> final_norm;
  WeightMatrix lm_head;
  bool has_mtp = false;
  MtpWeights mtp;
  int mtp_placement_layer = -1;

  std::vector<int> local_experts(int moe_layer) const {
    std::vector<int> out;
    for (int s = 0; s < placement.slots_per_rank(); ++s)
      out.push_back(placement.logical_of_local(moe_layer, comm->rank(), s));
    return out;
  }

  // One transformer block (model.py Block.forward): x += attn(attn_norm(x)); x += ffn(ffn_norm(x)).
  void run_block(const LayerWeights& lw, int moe_layer, float* x, int64_t T, const int64_t* positions,
                 const std::vector<SequenceSlice>& slices) {
    const int64_t H = cfg.hidden_size;
    Scratch h(T * H), f(T * H);
    rmsnorm(x, H, lw.input_norm.data(), T, H, ctx.rms_eps, h.data(), H, ctx.pool);
    mla_forward(ctx, lw.attn, h.data(), T, positions, slices, f.data());
    for (int64_t i = 0; i < T * H; ++i) x[i] += f[size_t(i)];
    rmsnorm(x, H, lw.post_attention_norm.data(), T, H, ctx.rms_eps, h.data(), H, ctx.pool);
    if (lw.moe) {
      MoeRuntime rt;
      rt.comm = comm;
      rt.placement = &placement;
      rt.placement_layer = moe_layer;
      rt.payload = opt.gemm == GemmMode::W8A8 ? DispatchPayload::FP8 : DispatchPayload::F32;
      moe_forward(ctx, lw.moe_weights, rt, h.data(), T, f.data());
    } else {
      mlp_forward(ctx, lw.mlp, h.data(), T, f.data());
    }
    for (int64_t i = 0; i < T * H; ++i) x[i] += f[size_t(i)];
  }

  // logits [rows, vocab] = head(norm(hidden rows)).
  Tensor head_logits(const std::vector<float>& rows, int64_t n, const std::vector<float>& norm,
                     const WeightMatrix& head) {
    const int64_t H = cfg.hidden_size;
    Scratch normed(n * H);
    rmsnorm(rows.data(), H, norm.data(), n, H, ctx.rms_eps, normed.data(), H, ctx.pool);
    Tensor logits = Tensor::zeros(DType::F32, {n, cfg.vocab_size});
    linear(ctx, normed.data(), n, head, logits.data<float>());
    return logits;
  }

  void check_token(int64_t token) const {
    if (token < 0 || token >= cfg.vocab_size)
      throw Error("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                  std::to_string(cfg.vocab_size) + ")");
  }
};

namespace {

void check_distinct(const std::vector<const Sequence*>& seqs) {
  std::unordered_set<const Sequence*> seen;
  for (const Sequence* s : seqs) {
    if (!s) throw Error("forward: a batch entry has no sequence");
    if (!seen.insert(s).second) throw Error("forward: the same sequence appears twice in one batch");
  }
}

void check_indices(const std::vector<int64_t>& idx, size_t n) {
  for (int64_t i : idx)
    if (i < 0 || i >= int64_t(n))
      throw Error("logit index " + std::to_string(i) + " is outside the " + std::to_string(n) + " new tokens");
}

}  // namespace

std::unique_ptr<DeepseekModel> DeepseekModel::load(const std::string& dir, const ModelOptions& options) {
  auto own = std::make_unique<SingleRankCommunicator>();
  Communicator& comm = *own;
  auto model = load(dir, options, comm);
  model->impl_->own_comm = std::move(own);
  return model;
}

std::unique_ptr<DeepseekModel> DeepseekModel::load(const std::string& dir, const ModelOptions& options,
                                                   Communicator& comm) {
  auto m = std::make_unique<Impl>();
  m->cfg = load_model_config(dir);
  m->opt = options;
  if (options.kv_dtype != DType::F32 && options.kv_dtype != DType::BF16)
    throw Error("KV cache dtype must be F32 or BF16, got " + std::string(dtype_name(options.kv_dtype)));
  m->ckpt = Checkpoint::open(dir);
  m->pool = std::make_unique<ThreadPool>(options.threads);
  m->comm = &comm;
  const ModelConfig& c = m->cfg;

  RopeParams rp;
  rp.rope_dim = int(c.qk_rope_head_dim);
  rp.theta = c.rope_theta;
  rp.yarn = c.rope_scaling.yarn;
  rp.factor = c.rope_scaling.factor;
  rp.beta_fast = c.rope_scaling.beta_fast;
  rp.beta_slow = c.rope_scaling.beta_slow;
  rp.mscale = c.rope_scaling.mscale;
  rp.mscale_all_dim = c.rope_scaling.mscale_all_dim;
  rp.original_max_position = c.rope_scaling.original_max_position_embeddings;
  m->ctx.config = &m->cfg;
  m->ctx.gemm = options.gemm;
  m->ctx.attention = options.attention;
  m->ctx.pool = m->pool.get();
  m->ctx.rope_freqs = rope_frequencies(rp);
  m->ctx.rope_amplitude = rope_amplitude(rp);
  m->ctx.softmax_scale = float(attention_softmax_scale(rp, int(c.qk_head_dim())));
  m->ctx.rms_eps = float(c.rms_norm_eps);

  m->has_mtp = options.load_mtp && c.num_nextn_predict_layers > 0;
  const int64_t n_blocks = c.num_hidden_layers + (m->has_mtp ? 1 : 0);
  int n_moe = 0;
  for (int64_t l = 0; l < n_blocks; ++l) m->placement_layer.push_back(c.is_moe_layer(l) ? n_moe++ : -1);
  if (n_moe > 0) m->placement = ExpertPlacement::uniform(n_moe, int(c.n_routed_experts), comm.size());

  m->embed = bind_tensor(m->ckpt, "model.embed_tokens.weight", c.vocab_size, c.hidden_size);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const int pl = m->placement_layer[size_t(l)];
    m->layers.push_back(bind_layer(m->ckpt, c, l, pl >= 0 ? m->local_experts(pl) : std::vector<int>{}));
  }
  m->final_norm = load_vector(m->ckpt, "model.norm.weight", c.hidden_size);
  if (c.tie_word_embeddings && !m->ckpt.contains("lm_head.weight"))
    m->lm_head = bind_linear(m->ckpt, "model.embed_tokens", c.vocab_size, c.hidden_size);
  else
    m->lm_head = bind_linear(m->ckpt, "lm_head", c.vocab_size, c.hidden_size);
  if (m->has_mtp) {
    const int pl = m->placement_layer.back();
    m->mtp_placement_layer = pl;
    m->mtp = bind_mtp(m->ckpt, c, pl >= 0 ? m->local_experts(pl) : std::vector<int>{});
  }
  return std::unique_ptr<DeepseekModel>(new DeepseekModel(std::move(m)));
}

DeepseekModel::DeepseekModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeepseekModel::~DeepseekModel() = default;

const ModelConfig& DeepseekModel::config() const { return impl_->cfg; }
const ModelOptions& DeepseekModel::options() const { return impl_->opt; }
bool DeepseekModel::has_mtp() const { return impl_->has_mtp; }
uint64_t DeepseekModel::weight_bytes() const { return impl_->ckpt.total_bytes(); }

std::unique_ptr<Sequence> DeepseekModel::create_sequence() const {
  const ModelConfig& c = impl_->cfg;
  auto s = std::make_unique<Sequence>();
  s->main = KvCache(c.num_hidden_layers, c.kv_lora_rank, c.qk_rope_head_dim, impl_->opt.kv_dtype);
  s->mtp = KvCache(impl_->has_mtp ? 1 : 0, c.kv_lora_rank, c.qk_rope_head_dim, impl_->opt.kv_dtype);
  return s;
}

Tensor DeepseekModel::forward(const std::vector<SequenceInput>& batch, Tensor* hidden) {
  Impl& m = *impl_;
  const ModelConfig& c = m.cfg;
  const int64_t H = c.hidden_size;
  std::vector<const Sequence*> seqs;
  for (const auto& in : batch) seqs.push_back(in.sequence);
  check_distinct(seqs);

  // Flatten the batch: rows of sequence b are [offset_b, offset_b + n_b), positions start at its cache length.
  std::vector<SequenceSlice> slices;
  std::vector<int64_t> positions;
  int64_t T = 0, n_out = 0;
  for (const auto& in : batch) {
    check_indices(in.logit_indices, in.tokens.size());
    for (int32_t t : in.tokens) m.check_token(t);
    const int64_t n = int64_t(in.tokens.size()), start = in.sequence->main.length();
    slices.push_back({&in.sequence->main, 0, start, T, n});
    for (int64_t i = 0; i < n; ++i) positions.push_back(start + i);
    T += n;
    n_out += int64_t(in.logit_indices.size());
  }
  for (auto& s : slices) s.cache->reserve(s.start + s.count);

  std::vector<float> x(static_cast<size_t>(T * H));  // h = embed(tokens): [T, hidden]
  {
    int64_t r = 0;
    for (const auto& in : batch)
      for (int32_t t : in.tokens) embedding_row(m.embed, t, x.data() + (r++) * H);
  }
  std::vector<SequenceSlice> layer_slices = slices;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (auto& s : layer_slices) s.cache_layer = l;
    m.run_block(m.layers[size_t(l)], m.placement_layer[size_t(l)], x.data(), T, positions.data(), layer_slices);
  }
  for (const auto& s : slices) s.cache->advance(s.count);

  // Rows asked for: [n_out, hidden] before the final norm, then norm + lm_head.
  std::vector<float> rows(static_cast<size_t>(n_out * H));
  int64_t r = 0;
  for (size_t b = 0; b < batch.size(); ++b)
    for (int64_t i : batch[b].logit_indices) {
      std::copy_n(x.data() + (slices[b].offset + i) * H, H, rows.data() + (r++) * H);
    }
  if (hidden) {
    *hidden = Tensor::zeros(DType::F32, {n_out, H});
    std::copy(rows.begin(), rows.end(), hidden->data<float>());
  }
  return m.head_logits(rows, n_out, m.final_norm, m.lm_head);
}

Tensor DeepseekModel::forward_mtp(const std::vector<MtpInput>& batch) {
  Impl& m = *impl_;
  if (!m.has_mtp) throw Error("this model has no MTP layer loaded (num_nextn_predict_layers = 0 or load_mtp off)");
  const ModelConfig& c = m.cfg;
  const int64_t H = c.hidden_size;
  std::vector<const Sequence*> seqs;
  for (const auto& in : batch) seqs.push_back(in.sequence);
  check_distinct(seqs);

  std::vector<SequenceSlice> slices;
  std::vector<int64_t> positions;
  int64_t T = 0, n_out = 0;
  for (const auto& in : batch) {
    const int64_t n = int64_t(in.next_tokens.size());
    if (in.hidden.rank() != 2 || in.hidden.dim(0) != n || in.hidden.dim(1) != H || in.hidden.dtype() != DType::F32)
      throw Error("MTP input hidden must be F32 [" + std::to_string(n) + ", " + std::to_string(H) + "], got " +
                  in.hidden.shape_string());
    check_indices(in.logit_indices, size_t(n));
    for (int32_t t : in.next_tokens) m.check_token(t);
    const int64_t start = in.sequence->mtp.length();
    slices.push_back({&in.sequence->mtp, 0, start, T, n});
    for (int64_t i = 0; i < n; ++i) positions.push_back(start + i);
    T += n;
    n_out += int64_t(in.logit_indices.size());
  }
  for (auto& s : slices) s.cache->reserve(s.start + s.count);

  // h = eh_proj(cat[enorm(emb(t_{i+1})), hnorm(h_i)]) (vLLM deepseek_mtp.py order, reference §1.9; the
  // embedding at position 0 is zeroed as vLLM does).
  std::vector<float> cat(static_cast<size_t>(T * 2 * H)), e(static_cast<size_t>(H));
  const Tensor& embed = m.mtp.embed.defined() ? m.mtp.embed : m.embed;
  int64_t r = 0;
  for (const auto& in : batch) {
    const float* hin = in.hidden.data<const float>();
    for (size_t i = 0; i < in.next_tokens.size(); ++i, ++r) {
      float* row = cat.data() + r * 2 * H;
      if (positions[size_t(r)] == 0) {
        std::fill(e.begin(), e.end(), 0.0f);
      } else {
        embedding_row(embed, in.next_tokens[i], e.data());
      }
      rmsnorm(e.data(), H, m.mtp.enorm.data(), 1, H, m.ctx.rms_eps, row, H, nullptr);
      rmsnorm(hin + int64_t(i) * H, H, m.mtp.hnorm.data(), 1, H, m.ctx.rms_eps, row + H, H, nullptr);
    }
  }
  std::vector<float> x(static_cast<size_t>(T * H));
  linear(m.ctx, cat.data(), T, m.mtp.eh_proj, x.data());
  m.run_block(m.mtp.block, m.mtp_placement_layer, x.data(), T, positions.data(), slices);
  for (const auto& s : slices) s.cache->advance(s.count);

  std::vector<float> rows(static_cast<size_t>(n_out * H));
  r = 0;
  for (size_t b = 0; b < batch.size(); ++b)
    for (int64_t i : batch[b].logit_indices) std::copy_n(x.data() + (slices[b].offset + i) * H, H, rows.data() + (r++) * H);
  return m.head_logits(rows, n_out, m.mtp.head_norm, m.mtp.head.data ? m.mtp.head : m.lm_head);
}

}  // namespace deepmoe
