// Transformer.forward of model.py for training, plus the MTP module (paper §2.2) and the backward pass.
#include "train/train_model.h"

#include <algorithm>

#include "core/error.h"
#include "train/train_layers.h"

namespace deepmoe {
namespace {

template <class R>
int64_t argmax(const R* v, int64_t n) {
  return int64_t(std::max_element(v, v + n) - v);
}

}  // namespace

template <class R>
void TrainModel<R>::check_config(const ModelConfig& c) {
  auto reject = [](const char* field, const std::string& why) {
    throw Error("the trainer does not support this config: " + why, {"", "", field});
  };
  if (c.arch != ModelArch::DeepseekV3) reject("architectures", "only DeepseekV3ForCausalLM is trained");
  if (c.scoring_func != "sigmoid") reject("scoring_func", "only the sigmoid gate is trained");
  if (c.topk_method != "noaux_tc") reject("topk_method", "only noaux_tc is trained");
  if (c.num_nextn_predict_layers > 1) reject("num_nextn_predict_layers", "at most one MTP module");
  if (c.tie_word_embeddings) reject("tie_word_embeddings", "embeddings are untied in DeepSeek-V3");
  if (c.n_routed_experts % std::max<int64_t>(c.n_group, 1) != 0) reject("n_group", "groups must divide the experts");
}

template <class R>
bool TrainModel<R>::is_mtp_parameter(const ModelConfig& c, const std::string& name) {
  return c.num_nextn_predict_layers > 0 && name.rfind(layer_prefix(c.num_hidden_layers), 0) == 0;
}

template <class R>
TrainModel<R>::TrainModel(const ModelConfig& config) : config_(config) {
  check_config(config);
}

template <class R>
StepResult TrainModel<R>::run(ParamStore<R>& ps, const TrainBatch& batch, const TrainSettings& settings,
                              bool backward, ThreadPool* pool, std::vector<R>* logits_out,
                              std::vector<R>* mtp_logits_out) const {
  const ModelConfig& c = config_;
  const int64_t B = batch.B, T = batch.T, D = c.hidden_size, V = c.vocab_size, N = B * T;
  DEEPMOE_CHECK(int64_t(batch.tokens.size()) == B * (T + 1), "batch tokens must be [B, T + 1]");
  for (int32_t t : batch.tokens)
    if (t < 0 || t >= V) throw Error("token id " + std::to_string(t) + " is outside the vocabulary of " + std::to_string(V));
  auto tok = [&](int64_t b, int64_t t) { return batch.tokens[size_t(b * (T + 1) + t)]; };
  if (settings.mtp_target == MtpTarget::MainModel && !settings.main_frozen)
    throw Error("the MTP module can be distilled toward the main model only while the main model is frozen");
  StepResult res;

  LayerContext ctx(c);
  ctx.precision = settings.precision;
  ctx.pool = pool;
  ctx.balance_alpha = settings.balance_alpha;
  ctx.set_shape(B, T);

  // h = embed(tokens)
  const auto& embed = ps.at("model.embed_tokens.weight");
  std::vector<R> x(size_t(N * D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) std::copy_n(embed.value.data() + tok(b, t) * D, D, x.data() + (b * T + t) * D);
  std::vector<BlockCache<R>> blocks(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) block_forward(ctx, ps, l, x.data(), blocks[size_t(l)]);
  const std::vector<R> hidden = x;  // [N, D] before the final norm: the MTP module's input

  // logits = head(norm(h)); loss = CE(logits, next tokens)
  const auto& final_norm = ps.at("model.norm.weight");
  const auto& head = ps.at("lm_head.weight");
  std::vector<R> hn(size_t(N * D)), rstd(static_cast<size_t>(N)), logits(size_t(N * V)), dlogits(size_t(N * V));
  rmsnorm_forward(hidden.data(), D, N, D, final_norm.value.data(), ctx.eps, hn.data(), D, rstd.data());
  matmul_nt(hn.data(), N, D, head.value.data(), V, logits.data(), pool);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) targets[size_t(b * T + t)] = tok(b, t + 1);
  res.main_loss = cross_entropy(logits.data(), N, V, targets.data(), 1.0, dlogits.data(), &res.main_tokens, pool);
  res.main_loss /= double(std::max<int64_t>(res.main_tokens, 1));
  for (const auto& bc : blocks)
    if (bc.moe) {
      res.expert_load.push_back(bc.moe_cache.load);
      res.balance_loss += bc.moe_cache.balance_loss;
    }

  // MTP (depth 1): row (b, i), i < T − 1: h' = eh_proj(cat[enorm(emb(t_{i+1})), hnorm(h_i)]), one block, the shared
  // head after shared_head.norm, predicting t_{i+2}.
  const bool mtp = c.num_nextn_predict_layers > 0 && T >= 2;
  const int64_t L = c.num_hidden_layers, T2 = T - 1, N2 = B * T2;
  LayerContext mctx(c);
  mctx.precision = settings.precision;
  mctx.pool = pool;
  mctx.balance_alpha = settings.balance_alpha;
  std::vector<R> e, erstd, hrstd, cat, m, mh, mrstd, mlogits, dmlogits;
  BlockCache<R> mblock;
  const std::string mp = layer_prefix(L);
  if (mtp) {
    mctx.set_shape(B, T2);
    e.assign(size_t(N2 * D), R(0));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 1; i < T2; ++i)  // position 0's embedding stays zero, as inference feeds it
        std::copy_n(embed.value.data() + tok(b, i + 1) * D, D, e.data() + (b * T2 + i) * D);
    cat.resize(size_t(N2 * 2 * D));
    erstd.resize(static_cast<size_t>(N2));
    hrstd.resize(static_cast<size_t>(N2));
    std::vector<R> hsel(size_t(N2 * D));
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(hidden.data() + b * T * D, T2 * D, hsel.data() + b * T2 * D);
    rmsnorm_forward(e.data(), D, N2, D, ps.at(mp + "enorm.weight").value.data(), ctx.eps, cat.data(), 2 * D,
                    erstd.data());
    rmsnorm_forward(hsel.data(), D, N2, D, ps.at(mp + "hnorm.weight").value.data(), ctx.eps, cat.data() + D, 2 * D,
                    hrstd.data());
    m.resize(size_t(N2 * D));
    matmul_nt(cat.data(), N2, 2 * D, ps.at(mp + "eh_proj.weight").value.data(), D, m.data(), pool);
    block_forward(mctx, ps, L, m.data(), mblock);
    mh.resize(size_t(N2 * D));
    mrstd.resize(static_cast<size_t>(N2));
    rmsnorm_forward(m.data(), D, N2, D, ps.at(mp + "shared_head.norm.weight").value.data(), ctx.eps, mh.data(), D,
                    mrstd.data());
    mlogits.resize(size_t(N2 * V));
    dmlogits.resize(mlogits.size());
    matmul_nt(mh.data(), N2, D, head.value.data(), V, mlogits.data(), pool);
    std::vector<int32_t> mtargets(static_cast<size_t>(N2));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T2; ++i) {
        const int64_t r = b * T2 + i;
        mtargets[size_t(r)] = tok(b, i + 2);
        const int64_t draft = argmax(mlogits.data() + r * V, V);
        res.mtp_drafts += 1;
        res.mtp_accepted += draft == argmax(logits.data() + (b * T + i + 1) * V, V);
        res.mtp_correct += draft == mtargets[size_t(r)];
      }
    if (settings.mtp_target == MtpTarget::MainModel) {
      // The teacher of row (b, i) is the main model's logits at position i + 1, the row verification compares the
      // draft with.
      std::vector<R> teacher(mlogits.size());
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(logits.data() + (b * T + 1) * V, T2 * V, teacher.data() + b * T2 * V);
      res.mtp_loss = distillation_kl(mlogits.data(), teacher.data(), N2, V, settings.mtp_weight, dmlogits.data(), pool);
      res.mtp_tokens = N2;
    } else {
      res.mtp_loss = cross_entropy(mlogits.data(), N2, V, mtargets.data(), settings.mtp_weight, dmlogits.data(),
                                   &res.mtp_tokens, pool);
    }
    res.mtp_loss /= double(std::max<int64_t>(res.mtp_tokens, 1));
    if (mblock.moe) {
      res.expert_load.push_back(mblock.moe_cache.load);
      res.balance_loss += mblock.moe_cache.balance_loss;
    }
  }
  res.objective = res.main_loss + (mtp ? settings.mtp_weight * res.mtp_loss : 0.0) + res.balance_loss;
  if (logits_out) *logits_out = logits;
  if (mtp_logits_out) *mtp_logits_out = mlogits;
  if (!backward) return res;

  auto& head_w = ps.at("lm_head.weight");
  auto& embed_w = ps.at("model.embed_tokens.weight");
  const bool frozen = settings.main_frozen;
  DEEPMOE_CHECK(!frozen || (head_w.frozen && embed_w.frozen), "a frozen main model needs frozen parameters");
  std::vector<R> dhidden(size_t(N * D), R(0));
  if (mtp) {
    std::vector<R> dmh(size_t(N2 * D), R(0)), dm(size_t(N2 * D), R(0)), dcat(size_t(N2 * 2 * D), R(0));
    linear_backward(mh.data(), N2, head_w.value.data(), V, D, dmlogits.data(), dmh.data(),
                    frozen ? nullptr : head_w.grad.data(), Precision::FP32, pool);
    auto& hnorm_w = ps.at(mp + "shared_head.norm.weight");
    rmsnorm_backward(m.data(), D, N2, D, hnorm_w.value.data(), mrstd.data(), dmh.data(), D, dm.data(), D,
                     hnorm_w.grad.data());
    block_backward(mctx, ps, L, mblock, dm.data());
    auto& eh = ps.at(mp + "eh_proj.weight");
    linear_backward(cat.data(), N2, eh.value.data(), D, 2 * D, dm.data(), dcat.data(), eh.grad.data(),
                    Precision::FP32, pool);
    std::vector<R> de(size_t(N2 * D), R(0)), dh2(size_t(N2 * D), R(0));
    auto& en = ps.at(mp + "enorm.weight");
    rmsnorm_backward(e.data(), D, N2, D, en.value.data(), erstd.data(), dcat.data(), 2 * D, de.data(), D,
                     en.grad.data());
    std::vector<R> hsel(size_t(N2 * D));
    for (int64_t b = 0; b < B; ++b) std::copy_n(hidden.data() + b * T * D, T2 * D, hsel.data() + b * T2 * D);
    auto& hnw = ps.at(mp + "hnorm.weight");
    rmsnorm_backward(hsel.data(), D, N2, D, hnw.value.data(), hrstd.data(), dcat.data() + D, 2 * D, dh2.data(), D,
                     hnw.grad.data());
    if (frozen) return res;  // dh2 and de would flow into the main model and the embedding
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T2; ++i) {
        R* dst = dhidden.data() + (b * T + i) * D;
        const R* src = dh2.data() + (b * T2 + i) * D;
        for (int64_t j = 0; j < D; ++j) dst[j] += src[j];
        if (i == 0) continue;
        R* ge = embed_w.grad.data() + tok(b, i + 1) * D;
        const R* g = de.data() + (b * T2 + i) * D;
        for (int64_t j = 0; j < D; ++j) ge[j] += g[j];
      }
  }
  if (frozen) return res;
  std::vector<R> dhn(size_t(N * D), R(0));
  linear_backward(hn.data(), N, head_w.value.data(), V, D, dlogits.data(), dhn.data(), head_w.grad.data(),
                  Precision::FP32, pool);
  auto& fn = ps.at("model.norm.weight");
  rmsnorm_backward(hidden.data(), D, N, D, fn.value.data(), rstd.data(), dhn.data(), D, dhidden.data(), D,
                   fn.grad.data());
  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l) block_backward(ctx, ps, l, blocks[size_t(l)], dhidden.data());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      R* ge = embed_w.grad.data() + tok(b, t) * D;
      const R* g = dhidden.data() + (b * T + t) * D;
      for (int64_t j = 0; j < D; ++j) ge[j] += g[j];
    }
  return res;
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace deepmoe
