// The trainer's model against independent references: its FP32 forward against its FP64 twin; the checkpoint it
// exports, loaded by the inference engine (runtime/executor.h), against the trainer's forward on the same
// (dequantized) weights, for the main logits and the MTP module's; the FP8 / BF16 projections against FP32.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>

#include "core/error.h"
#include "model/config.h"
#include "runtime/executor.h"
#include "train/checkpoint_export.h"
#include "train/train_model.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace deepmoe {
namespace {

TrainBatch random_batch(int64_t B, int64_t T, int64_t vocab, uint32_t seed) {
  TrainBatch b{B, T, {}};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, int32_t(vocab) - 1);
  for (int64_t i = 0; i < B * (T + 1); ++i) b.tokens.push_back(d(rng));
  return b;
}

// max |a − b| / max |b|
template <class A, class B>
double relative_max_error(const std::vector<A>& a, const std::vector<B>& b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return err / scale;
}

TEST(TrainModel, Fp32ForwardMatchesFp64) {
  const ModelConfig c = tiny_train_config();
  ParamStore<float> ps = ParamStore<float>::init(c, 1, 0.3);
  ParamStore<double> pd = ps.cast<double>();
  const TrainBatch batch = random_batch(2, 7, c.vocab_size, 1);
  std::vector<float> lf, mf;
  std::vector<double> ld, md;
  const StepResult rf = TrainModel<float>(c).run(ps, batch, {}, false, nullptr, &lf, &mf);
  const StepResult rd = TrainModel<double>(c).run(pd, batch, {}, false, nullptr, &ld, &md);
  EXPECT_LT(relative_max_error(lf, ld), 1e-5);
  EXPECT_LT(relative_max_error(mf, md), 1e-5);
  EXPECT_NEAR(rf.main_loss, rd.main_loss, 1e-5);
  EXPECT_NEAR(rf.mtp_loss, rd.mtp_loss, 1e-5);
}

TEST(TrainModel, ExportedCheckpointRunsTheSameForwardInInference) {
  ModelConfig c = train_preset("tiny");
  c.vocab_size = 97;
  ParamStore<float> trained = ParamStore<float>::init(c, 5, 0.2);
  for (auto& p : trained.all())
    if (p.spec.role == TensorRole::CorrectionBias)
      for (size_t e = 0; e < p.value.size(); ++e) p.value[e] = 0.01f * float(e % 3);  // selection uses the bias
  for (const bool fp8 : {true, false}) {
    const std::string dir = testing::TempDir() + (fp8 ? "/train_export_fp8" : "/train_export_bf16");
    export_hf_checkpoint(trained, dir, fp8, "");
    ParamStore<float> ps = import_hf_checkpoint(dir);  // the values inference multiplies
    const int64_t T = 12;
    const TrainBatch batch = random_batch(1, T, c.vocab_size, 3);
    std::vector<float> logits, mtp_logits;
    TrainModel<float>(c).run(ps, batch, {}, false, nullptr, &logits, &mtp_logits);

    auto model = Executor::load(dir);
    ASSERT_TRUE(model->has_mtp());
    EXPECT_EQ(model->config().fp8, fp8);
    auto seq = model->create_sequence();
    const std::vector<int32_t> input(batch.tokens.begin(), batch.tokens.begin() + T);
    Tensor hidden;
    const Tensor out = model->forward({SequenceInput::all(seq.get(), input)}, &hidden);
    const float* o = out.data<const float>();
    EXPECT_LT(relative_max_error(std::vector<float>(o, o + T * c.vocab_size), logits), 2e-5) << (fp8 ? "fp8" : "bf16");

    MtpInput mtp;
    mtp.sequence = seq.get();
    mtp.hidden = Tensor::zeros(DType::F32, {T - 1, c.hidden_size});
    std::copy_n(hidden.data<const float>(), (T - 1) * c.hidden_size, mtp.hidden.data<float>());
    for (int64_t i = 0; i < T - 1; ++i) {
      mtp.next_tokens.push_back(input[size_t(i + 1)]);
      mtp.logit_indices.push_back(i);
    }
    const Tensor mout = model->forward_mtp({mtp});
    const float* m = mout.data<const float>();
    EXPECT_LT(relative_max_error(std::vector<float>(m, m + (T - 1) * c.vocab_size), mtp_logits), 2e-5);
  }
}

// DeepGEMM's test metric: 1 − 2Σxy / (Σx² + Σy²).
double calc_diff(const std::vector<float>& x, const std::vector<double>& y) {
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) xy += double(x[i]) * y[i], xx += double(x[i]) * x[i], yy += y[i] * y[i];
  return 1 - 2 * xy / (xx + yy);
}

// The three GEMMs of a projection (forward, dgrad, wgrad) in BF16 and FP8 against the FP64 products of the
// unquantized operands (K and N not multiples of 128, so partial tiles and blocks are covered).
TEST(TrainModel, LowPrecisionProjectionGemmsMatchFp64) {
  const int64_t m = 150, n = 200, k = 300;
  std::mt19937 rng(4);
  std::normal_distribution<double> d(0, 1);
  std::vector<double> x(size_t(m * k)), w(size_t(n * k)), dy(size_t(m * n));
  for (auto& v : x) v = d(rng);
  for (auto& v : w) v = 0.05 * d(rng);
  for (auto& v : dy) v = 1e-3 * d(rng);
  std::vector<double> y_ref(size_t(m * n)), dx_ref(size_t(m * k), 0.0), dw_ref(size_t(n * k), 0.0);
  linear_forward(x.data(), m, w.data(), n, k, y_ref.data(), Precision::FP32, nullptr);
  linear_backward(x.data(), m, w.data(), n, k, dy.data(), dx_ref.data(), dw_ref.data(), Precision::FP32, nullptr);
  const std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), dyf(dy.begin(), dy.end());
  for (const Precision p : {Precision::BF16, Precision::FP8}) {
    std::vector<float> y(size_t(m * n)), dx(size_t(m * k), 0.0f), dw(size_t(n * k), 0.0f);
    linear_forward(xf.data(), m, wf.data(), n, k, y.data(), p, nullptr);
    linear_backward(xf.data(), m, wf.data(), n, k, dyf.data(), dx.data(), dw.data(), p, nullptr);
    const double limit = p == Precision::FP8 ? 1e-3 : 1e-5;
    const double floor = p == Precision::FP8 ? 1e-5 : 1e-8;  // the arithmetic really is low precision
    for (const auto& [name, got, want] : {std::tuple{"forward", &y, &y_ref}, std::tuple{"dgrad", &dx, &dx_ref},
                                          std::tuple{"wgrad", &dw, &dw_ref}}) {
      const double diff = calc_diff(*got, *want);
      EXPECT_LT(diff, limit) << precision_name(p) << " " << name;
      EXPECT_GT(diff, floor) << precision_name(p) << " " << name;
    }
  }
}

TEST(TrainModel, RejectsConfigsItDoesNotTrain) {
  ModelConfig c = tiny_train_config();
  c.scoring_func = "softmax";
  EXPECT_THROW(TrainModel<float>{c}, Error);
  c = tiny_train_config();
  c.num_nextn_predict_layers = 2;
  EXPECT_THROW(TrainModel<float>{c}, Error);
}

}  // namespace
}  // namespace deepmoe
