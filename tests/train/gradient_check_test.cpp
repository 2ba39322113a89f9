// Every backward pass of the trainer against FP64 central finite differences of its own FP64 forward, layer by
// layer (MLA, dense MLP, the MoE with its routing path, a whole block) and for the whole model with the MTP module
// and every loss term (next-token CE, λ-weighted MTP CE, sequence-wise balance loss), the MTP module alone
// distilled from a frozen main model, and the losses themselves. Each check perturbs the layer's input and entries
// of every parameter tensor it touches.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "train/train_layers.h"
#include "train/train_model.h"
#include "core/error.h"
#include "train_test_util.h"

namespace deepmoe {
namespace {

constexpr double kStep = 1e-6;

// Checks d(objective)/d(v[i]) against the central difference for `samples` random entries of v.
void expect_gradient(const char* what, std::vector<double>& v, const std::vector<double>& grad,
                     const std::function<double()>& objective, int samples, std::mt19937& rng) {
  ASSERT_EQ(v.size(), grad.size()) << what;
  std::uniform_int_distribution<size_t> pick(0, v.size() - 1);
  for (int s = 0; s < samples; ++s) {
    const size_t i = samples >= int(v.size()) ? size_t(s) % v.size() : pick(rng);
    const double keep = v[i];
    v[i] = keep + kStep;
    const double up = objective();
    v[i] = keep - kStep;
    const double down = objective();
    v[i] = keep;
    const double numeric = (up - down) / (2 * kStep);
    const double tol = 1e-6 + 1e-5 * std::abs(numeric);
    EXPECT_NEAR(grad[i], numeric, tol) << what << " [" << i << "]";
  }
}

ParamStore<double> random_params(const ModelConfig& c) {
  ParamStore<double> ps = ParamStore<float>::init(c, 7, 0.35).cast<double>();
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(-0.05, 0.05), n(0.8, 1.2);
  for (auto& p : ps.all()) {
    if (p.spec.role == TensorRole::CorrectionBias)
      for (auto& v : p.value) v = u(rng);  // selection uses the bias: make it matter
    if (p.spec.role == TensorRole::Norm)
      for (auto& v : p.value) v = n(rng);
  }
  return ps;
}

std::vector<double> random_vector(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A layer f(x) with weights in ps, checked through the scalar Σ r ⊙ f(x).
void check_layer(const char* what, const ModelConfig& c, ParamStore<double>& ps, const std::string& prefix,
                 int64_t B, int64_t T, double alpha,
                 const std::function<double(LayerContext&, const std::vector<double>&, bool, std::vector<double>*)>&
                     run) {
  LayerContext ctx(c);
  ctx.set_shape(B, T);
  ctx.balance_alpha = alpha;
  std::vector<double> x = random_vector(size_t(B * T * c.hidden_size), 11);
  std::vector<double> dx;
  ps.zero_grad();
  run(ctx, x, true, &dx);
  auto objective = [&] { return run(ctx, x, false, nullptr); };
  std::mt19937 rng(5);
  expect_gradient((std::string(what) + " input").c_str(), x, dx, objective, 24, rng);
  int tensors = 0;
  for (auto& p : ps.all()) {
    if (p.spec.name.rfind(prefix, 0) != 0 || !p.trained()) continue;
    const std::vector<double> g = p.grad;
    expect_gradient(p.spec.name.c_str(), p.value, g, objective, 6, rng);
    ++tensors;
  }
  EXPECT_GT(tensors, 0) << what;
}

TEST(GradientCheck, Mla) {
  const ModelConfig c = tiny_train_config();
  ParamStore<double> ps = random_params(c);
  const int64_t B = 2, T = 5;
  const std::vector<double> r = random_vector(size_t(B * T * c.hidden_size), 13);
  check_layer("mla", c, ps, "model.layers.0.self_attn.", B, T, 0,
              [&](LayerContext& ctx, const std::vector<double>& x, bool bwd, std::vector<double>* dx) {
                MlaCache<double> cache;
                std::vector<double> out(x.size());
                mla_forward(ctx, ps, "model.layers.0.", x.data(), out.data(), cache);
                double f = 0;
                for (size_t i = 0; i < out.size(); ++i) f += r[i] * out[i];
                if (bwd) {
                  dx->assign(x.size(), 0.0);
                  mla_backward(ctx, ps, "model.layers.0.", cache, r.data(), dx->data());
                }
                return f;
              });
}

TEST(GradientCheck, MlaWithoutQLora) {
  ModelConfig c = tiny_train_config();
  c.q_lora_rank = 0;
  c.rope_scaling.yarn = false;
  ParamStore<double> ps = random_params(c);
  const int64_t B = 1, T = 6;
  const std::vector<double> r = random_vector(size_t(B * T * c.hidden_size), 17);
  check_layer("mla q_proj", c, ps, "model.layers.1.self_attn.", B, T, 0,
              [&](LayerContext& ctx, const std::vector<double>& x, bool bwd, std::vector<double>* dx) {
                MlaCache<double> cache;
                std::vector<double> out(x.size());
                mla_forward(ctx, ps, "model.layers.1.", x.data(), out.data(), cache);
                double f = 0;
                for (size_t i = 0; i < out.size(); ++i) f += r[i] * out[i];
                if (bwd) {
                  dx->assign(x.size(), 0.0);
                  mla_backward(ctx, ps, "model.layers.1.", cache, r.data(), dx->data());
                }
                return f;
              });
}

TEST(GradientCheck, MoeRoutingPathWithBalanceLoss) {
  const ModelConfig c = tiny_train_config();
  ParamStore<double> ps = random_params(c);
  const int64_t B = 2, T = 6;
  const std::vector<double> r = random_vector(size_t(B * T * c.hidden_size), 19);
  check_layer("moe", c, ps, "model.layers.1.mlp.", B, T, 0.05,
              [&](LayerContext& ctx, const std::vector<double>& x, bool bwd, std::vector<double>* dx) {
                MoeCache<double> cache;
                std::vector<double> out(x.size());
                moe_forward(ctx, ps, "model.layers.1.", x.data(), out.data(), cache);
                double f = cache.balance_loss;
                for (size_t i = 0; i < out.size(); ++i) f += r[i] * out[i];
                if (bwd) {
                  dx->assign(x.size(), 0.0);
                  moe_backward(ctx, ps, "model.layers.1.", cache, r.data(), dx->data());
                }
                return f;
              });
}

TEST(GradientCheck, DenseAndMoeBlocks) {
  const ModelConfig c = tiny_train_config();
  ParamStore<double> ps = random_params(c);
  const int64_t B = 2, T = 4;
  for (int64_t layer : {0, 1}) {
    const std::vector<double> r = random_vector(size_t(B * T * c.hidden_size), 23 + uint32_t(layer));
    check_layer(layer == 0 ? "dense block" : "moe block", c, ps, layer_prefix(layer), B, T, 0,
                [&](LayerContext& ctx, const std::vector<double>& x, bool bwd, std::vector<double>* dx) {
                  BlockCache<double> cache;
                  std::vector<double> h = x;
                  block_forward(ctx, ps, layer, h.data(), cache);
                  double f = 0;
                  for (size_t i = 0; i < h.size(); ++i) f += r[i] * h[i];
                  if (bwd) {
                    *dx = r;
                    block_backward(ctx, ps, layer, cache, dx->data());
                  }
                  return f;
                });
  }
}

TEST(GradientCheck, WholeModelWithMtpAndLosses) {
  const ModelConfig c = tiny_train_config();
  ParamStore<double> ps = random_params(c);
  TrainModel<double> model(c);
  TrainBatch batch{2, 6, {}};
  std::mt19937 rng(29);
  std::uniform_int_distribution<int32_t> token(0, int32_t(c.vocab_size) - 1);
  for (int64_t i = 0; i < batch.B * (batch.T + 1); ++i) batch.tokens.push_back(token(rng));
  TrainSettings settings;
  settings.mtp_weight = 0.3;
  settings.balance_alpha = 0.02;
  ps.zero_grad();
  const StepResult res = model.run(ps, batch, settings, true, nullptr);
  EXPECT_GT(res.mtp_loss, 0);
  EXPECT_GT(res.balance_loss, 0);
  EXPECT_EQ(res.expert_load.size(), 2u);  // layer 1 and the MTP block
  auto objective = [&] { return model.run(ps, batch, settings, false, nullptr).objective; };
  int tensors = 0;
  for (auto& p : ps.all()) {
    if (!p.trained()) continue;
    const std::vector<double> g = p.grad;
    expect_gradient(p.spec.name.c_str(), p.value, g, objective, 3, rng);
    ++tensors;
  }
  EXPECT_GT(tensors, 60);
}

// `train --mtp-only --mtp-target main`: the main model frozen, the MTP module distilled toward the main model's
// distribution at the next position. Every MTP parameter's gradient against the finite difference of the
// objective (the teacher depends on frozen parameters only, so it is a constant for these), and no gradient at all
// anywhere else.
TEST(GradientCheck, MtpModuleDistilledFromTheFrozenMainModel) {
  const ModelConfig c = tiny_train_config();
  ParamStore<double> ps = random_params(c);
  for (auto& p : ps.all()) p.frozen = !TrainModel<double>::is_mtp_parameter(c, p.spec.name);
  TrainModel<double> model(c);
  TrainBatch batch{2, 6, {}};
  std::mt19937 rng(37);
  std::uniform_int_distribution<int32_t> token(0, int32_t(c.vocab_size) - 1);
  for (int64_t i = 0; i < batch.B * (batch.T + 1); ++i) batch.tokens.push_back(token(rng));
  TrainSettings settings;
  settings.mtp_weight = 0.7;
  settings.balance_alpha = 0.02;
  settings.mtp_target = MtpTarget::MainModel;
  settings.main_frozen = true;
  ps.zero_grad();
  const StepResult res = model.run(ps, batch, settings, true, nullptr);
  EXPECT_GT(res.mtp_loss, 0);
  EXPECT_EQ(res.mtp_tokens, batch.B * (batch.T - 1));
  auto objective = [&] { return model.run(ps, batch, settings, false, nullptr).objective; };
  int tensors = 0;
  for (auto& p : ps.all()) {
    if (p.frozen) {
      for (double g : p.grad) ASSERT_EQ(g, 0.0) << p.spec.name;
      continue;
    }
    if (!p.trained()) continue;
    const std::vector<double> g = p.grad;
    expect_gradient(p.spec.name.c_str(), p.value, g, objective, 4, rng);
    ++tensors;
  }
  EXPECT_GT(tensors, 20);  // eh_proj, enorm, hnorm, the block's attention and MoE, shared_head.norm
  EXPECT_TRUE(ps.at("lm_head.weight").frozen && ps.at("model.embed_tokens.weight").frozen);
  EXPECT_FALSE(ps.at(layer_prefix(c.num_hidden_layers) + "eh_proj.weight").frozen);

  // The teacher's gradient does not flow: a main model that is not frozen is refused.
  settings.main_frozen = false;
  EXPECT_THROW(model.run(ps, batch, settings, false, nullptr), Error);
}

TEST(GradientCheck, DistillationKl) {
  const int64_t rows = 3, vocab = 6;
  std::vector<double> logits = random_vector(size_t(rows * vocab), 41, 2.0), d(logits.size());
  const std::vector<double> teacher = random_vector(size_t(rows * vocab), 43, 3.0);
  const double kl = distillation_kl(logits.data(), teacher.data(), rows, vocab, 0.7, d.data(), nullptr);
  // The definition, written out: Σ_rows Σ_j p_j log(p_j / q_j) with p, q the two softmaxes.
  double expected = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double zp = 0, zq = 0;
    for (int64_t j = 0; j < vocab; ++j) zp += std::exp(teacher[r * vocab + j]), zq += std::exp(logits[r * vocab + j]);
    for (int64_t j = 0; j < vocab; ++j) {
      const double p = std::exp(teacher[r * vocab + j]) / zp, q = std::exp(logits[r * vocab + j]) / zq;
      expected += p * std::log(p / q);
    }
  }
  EXPECT_NEAR(kl, expected, 1e-12);
  EXPECT_GT(kl, 0);
  auto objective = [&] {
    std::vector<double> tmp(logits.size());
    return 0.7 * distillation_kl(logits.data(), teacher.data(), rows, vocab, 0.7, tmp.data(), nullptr) / rows;
  };
  std::mt19937 rng(2);
  expect_gradient("distillation KL", logits, d, objective, 18, rng);
  // Identical distributions (logits shifted by a constant): zero loss and zero gradient.
  std::vector<double> shifted = teacher;
  for (double& v : shifted) v += 1.5;
  EXPECT_NEAR(distillation_kl(shifted.data(), teacher.data(), rows, vocab, 1.0, d.data(), nullptr), 0.0, 1e-12);
  for (double g : d) EXPECT_NEAR(g, 0.0, 1e-15);
}

TEST(GradientCheck, CrossEntropy) {
  const int64_t rows = 3, vocab = 5;
  std::vector<double> logits = random_vector(size_t(rows * vocab), 31, 2.0), d(logits.size());
  const std::vector<int32_t> targets{4, -1, 0};  // the middle row is ignored
  int64_t counted = 0;
  const double loss = cross_entropy(logits.data(), rows, vocab, targets.data(), 0.7, d.data(), &counted, nullptr);
  EXPECT_EQ(counted, 2);
  auto objective = [&] {
    std::vector<double> tmp(logits.size());
    int64_t n = 0;
    return 0.7 * cross_entropy(logits.data(), rows, vocab, targets.data(), 0.7, tmp.data(), &n, nullptr) / 2;
  };
  EXPECT_NEAR(loss / 2 * 0.7, objective(), 1e-15);
  std::mt19937 rng(1);
  expect_gradient("cross entropy", logits, d, objective, 15, rng);
}

}  // namespace
}  // namespace deepmoe
