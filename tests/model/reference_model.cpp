#include "reference_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <numeric>

#include "core/dtype.h"
#include "core/error.h"

namespace deepmoe::testing_util {
namespace {

std::string L(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

double bf16_round(double x) { return bf16_to_f32(f32_to_bf16(float(x))); }

// Indices of the k largest values (ties: lower index), the specification of torch.topk on distinct values.
std::vector<int> top_indices(const std::vector<double>& v, int k) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[size_t(a)] > v[size_t(b)]; });
  idx.resize(size_t(k));
  return idx;
}

}  // namespace

ReferenceModel::ReferenceModel(const std::string& dir) : cfg_(load_model_config(dir)), ckpt_(Checkpoint::open(dir)) {}

const std::vector<double>& ReferenceModel::w(const std::string& name) {
  auto it = cache_.find(name);
  if (it != cache_.end()) return it->second;
  Tensor t = ckpt_.get(name);
  std::vector<double> out(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::F8_E4M3) {
    // weight_dequant: y[m, n] = W[m, n] · s[m/128, n/128] (reference §2).
    Tensor s = ckpt_.get(name + "_scale_inv");
    const int64_t rows = t.dim(0), cols = t.dim(1), sc = s.dim(1);
    const uint8_t* q = t.data<const uint8_t>();
    const float* sv = s.data<const float>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        out[size_t(r * cols + c)] = double(fp8_e4m3_to_f32(q[r * cols + c])) * sv[(r / 128) * sc + c / 128];
  } else {
    std::vector<float> f(out.size());
    convert_to_f32(t.dtype(), t.raw(), f.data(), f.size());
    std::copy(f.begin(), f.end(), out.begin());
  }
  return cache_.emplace(name, std::move(out)).first->second;
}

std::vector<double> ReferenceModel::linear(const std::vector<double>& x, int64_t S, const std::string& name,
                                           int64_t n, int64_t k) {
  const std::vector<double>& W = w(name + ".weight");
  if (quantize_acts_ && ckpt_.dtype_of(name + ".weight") == DType::F8_E4M3) {
    std::vector<double> xq = x;
    for (int64_t s = 0; s < S; ++s)
      for (int64_t b = 0; b < k; b += 128) {
        const int64_t e = std::min(k, b + 128);
        double amax = 0;
        for (int64_t i = b; i < e; ++i) amax = std::max(amax, std::fabs(x[size_t(s * k + i)]));
        const float scale = std::max(float(amax), 1e-4f) / 448.0f;
        for (int64_t i = b; i < e; ++i)
          xq[size_t(s * k + i)] = double(fp8_e4m3_to_f32(f32_to_fp8_e4m3(float(x[size_t(s * k + i)]) / scale))) * scale;
      }
    quantize_acts_ = false;
    auto y = linear(xq, S, name, n, k);
    quantize_acts_ = true;
    return y;
  }
  std::vector<double> y(static_cast<size_t>(S * n), 0.0);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t o = 0; o < n; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < k; ++i) acc += x[size_t(s * k + i)] * W[size_t(o * k + i)];
      y[size_t(s * n + o)] = acc;
    }
  return y;
}

std::vector<double> ReferenceModel::rmsnorm(const std::vector<double>& x, int64_t S, int64_t dim,
                                            const std::string& weight) {
  const std::vector<double>& g = w(weight);
  std::vector<double> y(static_cast<size_t>(S * dim));
  for (int64_t s = 0; s < S; ++s) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[size_t(s * dim + i)] * x[size_t(s * dim + i)];
    double inv = 1.0 / std::sqrt(ss / double(dim) + cfg_.rms_norm_eps);
    for (int64_t i = 0; i < dim; ++i) y[size_t(s * dim + i)] = g[size_t(i)] * x[size_t(s * dim + i)] * inv;
  }
  return y;
}

// precompute_freqs_cis + apply_rotary_emb on interleaved pairs, in FP64 (reference §1.4).
void ReferenceModel::rope(double* v, int64_t pos) {
  const int64_t d = cfg_.qk_rope_head_dim;
  const auto& rs = cfg_.rope_scaling;
  for (int64_t i = 0; i < d / 2; ++i) {
    double f = 1.0 / std::pow(cfg_.rope_theta, double(2 * i) / double(d));
    if (rs.yarn) {
      auto cd = [&](double rot) {
        return double(d) * std::log(double(rs.original_max_position_embeddings) / (rot * 2 * std::numbers::pi)) /
               (2 * std::log(cfg_.rope_theta));
      };
      double low = std::max(std::floor(cd(rs.beta_fast)), 0.0), high = std::min(std::ceil(cd(rs.beta_slow)), double(d - 1));
      if (low == high) high += 0.001;
      double smooth = 1.0 - std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
      f = f / rs.factor * (1 - smooth) + f * smooth;
    }
    double amp = 1.0;
    if (rs.yarn && rs.mscale_all_dim != 0) {
      auto ms = [&](double m) { return rs.factor <= 1 ? 1.0 : 0.1 * m * std::log(rs.factor) + 1.0; };
      amp = ms(rs.mscale) / ms(rs.mscale_all_dim);
    }
    double c = std::cos(double(pos) * f) * amp, s = std::sin(double(pos) * f) * amp;
    double a = v[2 * i], b = v[2 * i + 1];
    v[2 * i] = a * c - b * s;
    v[2 * i + 1] = a * s + b * c;
  }
}

std::vector<double> ReferenceModel::attention(const std::vector<double>& x, int64_t S, const std::string& a,
                                              bool round_bf16) {
  const int64_t H = cfg_.num_attention_heads, nope = cfg_.qk_nope_head_dim, R = cfg_.qk_rope_head_dim,
                qk = nope + R, V = cfg_.v_head_dim, C = cfg_.kv_lora_rank, D = cfg_.hidden_size;
  std::vector<double> q;
  if (cfg_.q_lora_rank > 0) {
    auto qa = linear(x, S, a + "q_a_proj", cfg_.q_lora_rank, D);
    qa = rmsnorm(qa, S, cfg_.q_lora_rank, a + "q_a_layernorm.weight");
    q = linear(qa, S, a + "q_b_proj", H * qk, cfg_.q_lora_rank);
  } else {
    q = linear(x, S, a + "q_proj", H * qk, D);
  }
  auto kv = linear(x, S, a + "kv_a_proj_with_mqa", C + R, D);
  std::vector<double> latent(static_cast<size_t>(S * C)), kpe(size_t(S * R));
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t j = 0; j < C; ++j) latent[size_t(s * C + j)] = kv[size_t(s * (C + R) + j)];
    for (int64_t j = 0; j < R; ++j) kpe[size_t(s * R + j)] = kv[size_t(s * (C + R) + C + j)];
    rope(&kpe[size_t(s * R)], s);
    for (int64_t h = 0; h < H; ++h) rope(&q[size_t((s * H + h) * qk + nope)], s);
  }
  latent = rmsnorm(latent, S, C, a + "kv_a_layernorm.weight");
  if (round_bf16) {
    for (auto& v : latent) v = bf16_round(v);
    for (auto& v : kpe) v = bf16_round(v);
  }
  // Naive: kv = wkv_b(latent) → [S, H, nope + v]; k = [k_nope, k_pe], v.
  auto kvb = linear(latent, S, a + "kv_b_proj", H * (nope + V), C);
  double scale = 1.0 / std::sqrt(double(qk));
  const auto& rs = cfg_.rope_scaling;
  if (rs.yarn) {
    double m = rs.factor <= 1 ? 1.0 : 0.1 * rs.mscale_all_dim * std::log(rs.factor) + 1.0;
    scale *= m * m;
  }
  std::vector<double> o(size_t(S * H * V), 0.0);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> p(static_cast<size_t>(s + 1));
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t <= s; ++t) {
        double acc = 0;
        for (int64_t j = 0; j < nope; ++j)
          acc += q[size_t((s * H + h) * qk + j)] * kvb[size_t((t * H + h) * (nope + V) + j)];
        for (int64_t j = 0; j < R; ++j) acc += q[size_t((s * H + h) * qk + nope + j)] * kpe[size_t(t * R + j)];
        p[size_t(t)] = acc * scale;
        mx = std::max(mx, p[size_t(t)]);
      }
      double sum = 0;
      for (auto& e : p) sum += (e = std::exp(e - mx));
      for (int64_t t = 0; t <= s; ++t)
        for (int64_t j = 0; j < V; ++j)
          o[size_t((s * H + h) * V + j)] += p[size_t(t)] / sum * kvb[size_t((t * H + h) * (nope + V) + nope + j)];
    }
  return linear(o, S, a + "o_proj", D, H * V);
}

std::vector<double> ReferenceModel::mlp(const std::vector<double>& x, int64_t S, const std::string& p, int64_t inter) {
  const int64_t D = cfg_.hidden_size;
  auto g = linear(x, S, p + "gate_proj", inter, D), u = linear(x, S, p + "up_proj", inter, D);
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  return linear(g, S, p + "down_proj", D, inter);
}

// Gate (reference §1.6, HF MoEGate) + routed experts + shared experts (§1.7).
std::vector<double> ReferenceModel::moe(const std::vector<double>& x, int64_t S, const std::string& p) {
  const int64_t D = cfg_.hidden_size, E = cfg_.n_routed_experts, K = cfg_.num_experts_per_tok,
                G = cfg_.n_group, per = E / G;
  auto logits = linear(x, S, p + "gate", E, D);
  const bool has_bias = cfg_.topk_method == "noaux_tc";
  std::vector<double> y(size_t(S * D), 0.0);
  for (int64_t s = 0; s < S; ++s) {
    std::vector<double> sc(static_cast<size_t>(E));
    if (cfg_.scoring_func == "sigmoid") {
      for (int64_t e = 0; e < E; ++e) sc[size_t(e)] = 1.0 / (1.0 + std::exp(-logits[size_t(s * E + e)]));
    } else {
      double mx = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int64_t e = 0; e < E; ++e) mx = std::max(mx, logits[size_t(s * E + e)]);
      for (int64_t e = 0; e < E; ++e) sum += (sc[size_t(e)] = std::exp(logits[size_t(s * E + e)] - mx));
      for (auto& v : sc) v /= sum;
    }
    std::vector<double> choice = sc;
    if (has_bias) {
      const auto& b = w(p + "gate.e_score_correction_bias");
      for (int64_t e = 0; e < E; ++e) choice[size_t(e)] += b[size_t(e)];
    }
    if (cfg_.topk_method != "greedy" && G > 1) {
      std::vector<double> gs(static_cast<size_t>(G));
      for (int64_t g = 0; g < G; ++g) {
        std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
        std::sort(members.rbegin(), members.rend());
        gs[size_t(g)] = has_bias ? members[0] + members[1] : members[0];  // top-2 sum (noaux_tc) or max
      }
      auto keep = top_indices(gs, int(cfg_.topk_group));
      for (int64_t g = 0; g < G; ++g)
        if (std::find(keep.begin(), keep.end(), int(g)) == keep.end())
          for (int64_t j = 0; j < per; ++j) choice[size_t(g * per + j)] = -std::numeric_limits<double>::infinity();
    }
    auto idx = top_indices(choice, int(K));
    std::vector<double> wt(static_cast<size_t>(K));
    double sum = 0;
    for (int64_t i = 0; i < K; ++i) sum += (wt[size_t(i)] = sc[size_t(idx[size_t(i)])]);  // unbiased scores
    const bool v3 = cfg_.arch == ModelArch::DeepseekV3;
    const bool normalize = v3 ? cfg_.norm_topk_prob : (K > 1 && cfg_.norm_topk_prob);
    for (auto& v : wt) {
      if (normalize) v /= sum + 1e-20;
      if (v3 || !normalize) v *= cfg_.routed_scaling_factor;
    }
    std::vector<double> xs(x.begin() + s * D, x.begin() + (s + 1) * D);
    for (int64_t i = 0; i < K; ++i) {
      auto out = mlp(xs, 1, p + "experts." + std::to_string(idx[size_t(i)]) + ".", cfg_.moe_intermediate_size);
      for (int64_t j = 0; j < D; ++j) y[size_t(s * D + j)] += wt[size_t(i)] * out[size_t(j)];
    }
  }
  if (cfg_.n_shared_experts > 0) {
    auto z = mlp(x, S, p + "shared_experts.", cfg_.n_shared_experts * cfg_.moe_intermediate_size);
    for (size_t i = 0; i < y.size(); ++i) y[i] += z[i];
  }
  return y;
}

void ReferenceModel::block(std::vector<double>& x, int64_t S, int64_t layer, bool round_bf16) {
  const int64_t D = cfg_.hidden_size;
  auto h = rmsnorm(x, S, D, L(layer) + "input_layernorm.weight");
  auto a = attention(h, S, L(layer) + "self_attn.", round_bf16);
  for (size_t i = 0; i < x.size(); ++i) x[i] += a[i];
  h = rmsnorm(x, S, D, L(layer) + "post_attention_layernorm.weight");
  auto f = cfg_.is_moe_layer(layer) ? moe(h, S, L(layer) + "mlp.")
                                    : mlp(h, S, L(layer) + "mlp.", cfg_.intermediate_size);
  for (size_t i = 0; i < x.size(); ++i) x[i] += f[i];
}

ReferenceOutput ReferenceModel::forward(const std::vector<int32_t>& tokens, bool round_bf16) {
  const int64_t S = int64_t(tokens.size()), D = cfg_.hidden_size;
  const auto& emb = w("model.embed_tokens.weight");
  std::vector<double> x(static_cast<size_t>(S * D));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < D; ++j) x[size_t(s * D + j)] = emb[size_t(tokens[size_t(s)] * D + j)];
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) block(x, S, l, round_bf16);
  ReferenceOutput out;
  out.hidden = x;
  auto n = rmsnorm(x, S, D, "model.norm.weight");
  out.logits = linear(n, S, "lm_head", cfg_.vocab_size, D);
  return out;
}

std::vector<double> ReferenceModel::mtp(const std::vector<double>& hidden, const std::vector<int32_t>& next) {
  const int64_t S = int64_t(next.size()), D = cfg_.hidden_size, Lm = cfg_.num_hidden_layers;
  const auto& emb = w(L(Lm) + "embed_tokens.weight");
  std::vector<double> e(size_t(S * D), 0.0);
  for (int64_t s = 1; s < S; ++s)  // position 0 stays zero (vLLM deepseek_mtp.py)
    for (int64_t j = 0; j < D; ++j) e[size_t(s * D + j)] = emb[size_t(next[size_t(s)] * D + j)];
  auto en = rmsnorm(e, S, D, L(Lm) + "enorm.weight"), hn = rmsnorm(hidden, S, D, L(Lm) + "hnorm.weight");
  std::vector<double> cat(static_cast<size_t>(S * 2 * D));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < D; ++j) {
      cat[size_t(s * 2 * D + j)] = en[size_t(s * D + j)];
      cat[size_t(s * 2 * D + D + j)] = hn[size_t(s * D + j)];
    }
  auto x = linear(cat, S, L(Lm) + "eh_proj", D, 2 * D);
  block(x, S, Lm, false);
  auto n = rmsnorm(x, S, D, L(Lm) + "shared_head.norm.weight");
  return linear(n, S, L(Lm) + "shared_head.head", cfg_.vocab_size, D);
}

double max_rel_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double d = 0, m = 1e-300;
  for (size_t i = 0; i < b.size(); ++i) {
    d = std::max(d, std::fabs(double(a[i]) - b[i]));
    m = std::max(m, std::fabs(b[i]));
  }
  return d / m;
}

}  // namespace deepmoe::testing_util
