#include "train/trainer.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/machine_limits.h"
#include "core/mapped_file.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/gemm.h"
#include "model/safetensors.h"
#include "checkpoint/safetensors_writer.h"
#include "tokenizer/tokenizer.h"
#include "train/adamw.h"
#include "train/checkpoint_export.h"
#include "train/loss_curve_svg.h"
#include "train/param_store.h"
#include "train/token_data.h"
#include "train/train_model.h"

namespace deepmoe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kStateFile = "trainer_state.safetensors";
constexpr const char* kMetricsFile = "metrics.jsonl";

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Names of the correction biases, one per MoE layer in StepResult::expert_load order (MTP block last).
std::vector<std::string> bias_names(const ModelConfig& c) {
  std::vector<std::string> out;
  for (int64_t l = 0; l < c.num_hidden_layers + std::min<int64_t>(c.num_nextn_predict_layers, 1); ++l)
    if (c.is_moe_layer(l)) out.push_back("model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias");
  return out;
}

double load_max_over_mean(const std::vector<std::vector<int64_t>>& load) {
  if (load.empty()) return 1.0;
  double total = 0;
  for (const auto& layer : load) {
    int64_t sum = 0, mx = 0;
    for (int64_t v : layer) sum += v, mx = std::max(mx, v);
    total += sum > 0 ? double(mx) / (double(sum) / double(layer.size())) : 1.0;
  }
  return total / double(load.size());
}

std::string duration_text(double seconds) {
  const int64_t s = int64_t(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else std::snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

struct Evaluation {
  double loss = 0, mtp_loss = 0, acceptance = 0, accuracy = 0;
};

Evaluation evaluate(const TrainModel<float>& model, ParamStore<float>& ps, const std::vector<TrainBatch>& val,
                    const TrainSettings& settings, ThreadPool* pool) {
  double loss = 0, mtp = 0;
  int64_t tokens = 0, mtp_tokens = 0, drafts = 0, accepted = 0, correct = 0;
  for (const TrainBatch& b : val) {
    const StepResult r = model.run(ps, b, settings, false, pool);
    loss += r.main_loss * double(r.main_tokens), tokens += r.main_tokens;
    mtp += r.mtp_loss * double(r.mtp_tokens), mtp_tokens += r.mtp_tokens;
    drafts += r.mtp_drafts, accepted += r.mtp_accepted, correct += r.mtp_correct;
  }
  Evaluation e;
  e.loss = loss / double(std::max<int64_t>(tokens, 1));
  e.mtp_loss = mtp / double(std::max<int64_t>(mtp_tokens, 1));
  e.acceptance = double(accepted) / double(std::max<int64_t>(drafts, 1));
  e.accuracy = double(correct) / double(std::max<int64_t>(drafts, 1));
  return e;
}

void save_state(const std::string& dir, const TrainerOptions& options, ParamStore<float>& ps, AdamW& adam,
                int64_t step, const TrainRng& rng, uint64_t data_fingerprint) {
  SafetensorsWriter w;
  auto& params = ps.all();
  for (size_t i = 0; i < params.size(); ++i) {
    auto& p = params[i];
    const std::vector<int64_t> shape{p.numel()};
    w.add("param/" + p.spec.name, Tensor::view(DType::F32, shape, p.value.data()));
    w.add("adam_m/" + p.spec.name, Tensor::view(DType::F32, shape, adam.first_moments()[i].data()));
    w.add("adam_v/" + p.spec.name, Tensor::view(DType::F32, shape, adam.second_moments()[i].data()));
  }
  w.set_metadata("step", std::to_string(step));
  w.set_metadata("adam_steps", std::to_string(adam.steps()));
  w.set_metadata("rng", std::to_string(rng.state));
  w.set_metadata("data_fingerprint", std::to_string(data_fingerprint));
  w.set_metadata("options", options.to_json());
  w.write((fs::path(dir) / kStateFile).string());
}

std::vector<json> read_metrics(const std::string& dir, int64_t up_to_step) {
  std::vector<json> out;
  std::ifstream f(fs::path(dir) / kMetricsFile);
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step")) continue;
    if (j["step"].get<int64_t>() <= up_to_step) out.push_back(std::move(j));
  }
  return out;
}

void write_metrics(const std::string& dir, const std::vector<json>& metrics) {
  std::ofstream f(fs::path(dir) / kMetricsFile, std::ios::binary);
  for (const json& j : metrics) f << j.dump() << '\n';
  if (!f) throw Error("cannot write " + (fs::path(dir) / kMetricsFile).string());
}

// Train loss as a running mean over ~2% of the run (the raw per-step loss is noisy), validation loss as measured.
std::vector<CurveSeries> curves_of(const std::vector<json>& metrics, const std::string& label, const char* train_color,
                                   const char* val_color) {
  CurveSeries train{label + " train", train_color, false, {}}, val{label + " validation", val_color, true, {}};
  std::vector<std::pair<double, double>> raw;
  for (const json& j : metrics) {
    if (j.contains("loss")) raw.emplace_back(j["step"].get<double>(), j["loss"].get<double>());
    if (j.contains("val_loss")) val.points.emplace_back(j["step"].get<double>(), j["val_loss"].get<double>());
  }
  const size_t window = std::max<size_t>(1, raw.size() / 50);
  double sum = 0;
  for (size_t i = 0; i < raw.size(); ++i) {
    sum += raw[i].second;
    if (i >= window) sum -= raw[i - window].second;
    train.points.emplace_back(raw[i].first, sum / double(std::min(i + 1, window)));
  }
  return {train, val};
}

void write_curve(const std::string& dir, const std::vector<json>& metrics, const TrainerOptions& options,
                 const std::vector<std::string>& overlay) {
  const char* colors[][2] = {{"#1f77b4", "#0b3c66"}, {"#d62728", "#7a1010"}, {"#2ca02c", "#145214"}};
  std::vector<CurveSeries> series = curves_of(metrics, precision_name(options.precision), colors[0][0], colors[0][1]);
  for (size_t i = 0; i < overlay.size(); ++i) {
    std::string label = overlay[i];
    try {
      const json opts = json::parse(read_text_file((fs::path(overlay[i]) / "train_options.json").string()));
      label = opts.value("precision", label);
    } catch (...) {
    }
    for (auto& s : curves_of(read_metrics(overlay[i], INT64_MAX), label, colors[(i + 1) % 3][0], colors[(i + 1) % 3][1]))
      series.push_back(std::move(s));
  }
  std::ofstream f(fs::path(dir) / "loss_curve.svg", std::ios::binary);
  f << loss_curve_svg("deepmoe train: loss per token", series);
}

}  // namespace

std::string TrainerOptions::to_json() const {
  json j;
  j["data"] = data_path;
  j["tokenizer"] = tokenizer_dir;
  j["model"] = json::parse(model_config_to_json(model));
  j["steps"] = steps, j["batch"] = batch, j["seq_len"] = seq_len, j["warmup"] = warmup;
  j["lr"] = lr, j["min_lr_ratio"] = min_lr_ratio, j["weight_decay"] = weight_decay, j["clip"] = clip;
  j["beta1"] = beta1, j["beta2"] = beta2, j["bias_gamma"] = bias_gamma, j["balance_alpha"] = balance_alpha;
  j["mtp_weight"] = mtp_weight, j["init_std"] = init_std, j["val_fraction"] = val_fraction;
  j["precision"] = precision_name(precision), j["seed"] = seed;
  j["eval_every"] = eval_every, j["eval_windows"] = eval_windows, j["checkpoint_every"] = checkpoint_every;
  j["fp8_checkpoint"] = fp8_checkpoint;
  j["init_from"] = init_from, j["mtp_only"] = mtp_only, j["mtp_target"] = mtp_target_name(mtp_target);
  return j.dump(1);
}

TrainerOptions TrainerOptions::from_json(const std::string& text, const std::string& path) {
  TrainerOptions o;
  try {
    const json j = json::parse(text);
    o.data_path = j.at("data").get<std::string>();
    o.tokenizer_dir = j.at("tokenizer").get<std::string>();
    o.model = parse_model_config(j.at("model").dump(), path);
    o.steps = j.at("steps"), o.batch = j.at("batch"), o.seq_len = j.at("seq_len"), o.warmup = j.at("warmup");
    o.lr = j.at("lr"), o.min_lr_ratio = j.at("min_lr_ratio"), o.weight_decay = j.at("weight_decay");
    o.clip = j.at("clip"), o.beta1 = j.at("beta1"), o.beta2 = j.at("beta2"), o.bias_gamma = j.at("bias_gamma");
    o.balance_alpha = j.at("balance_alpha"), o.mtp_weight = j.at("mtp_weight"), o.init_std = j.at("init_std");
    o.val_fraction = j.at("val_fraction"), o.precision = parse_precision(j.at("precision").get<std::string>());
    o.seed = j.at("seed"), o.eval_every = j.at("eval_every"), o.eval_windows = j.at("eval_windows");
    o.checkpoint_every = j.at("checkpoint_every"), o.fp8_checkpoint = j.at("fp8_checkpoint");
    // Absent in runs saved before fine-tuning existed: a run from scratch.
    o.init_from = j.value("init_from", std::string());
    o.mtp_only = j.value("mtp_only", false);
    o.mtp_target = parse_mtp_target(j.value("mtp_target", std::string("data")));
  } catch (const json::exception& e) {
    throw Error(std::string("bad trainer options: ") + e.what(), {path, "", ""});
  }
  return o;
}

const char* mtp_target_name(MtpTarget target) { return target == MtpTarget::MainModel ? "main" : "data"; }

MtpTarget parse_mtp_target(const std::string& name) {
  if (name == "data") return MtpTarget::Data;
  if (name == "main") return MtpTarget::MainModel;
  throw Error("unknown MTP target '" + name + "' (data: the text's token after next; main: the main model's "
              "distribution at the next position)",
              {"", "", "--mtp-target"});
}

ModelConfig train_preset(const std::string& name) {
  ModelConfig c;
  c.arch = ModelArch::DeepseekV3;
  c.scoring_func = "sigmoid";
  c.topk_method = "noaux_tc";
  c.norm_topk_prob = true;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.eos_token_ids = {1};
  c.num_nextn_predict_layers = 1;
  c.routed_scaling_factor = 2.5;
  if (name == "shakespeare") {  // ~5.7M parameters, ~1.8M active per token (with the MTP module)
    c.hidden_size = 192;
    c.intermediate_size = 384;
    c.moe_intermediate_size = 96;
    c.num_hidden_layers = 4;
    c.first_k_dense_replace = 1;
    c.num_attention_heads = 4;
    c.q_lora_rank = 96;
    c.kv_lora_rank = 64;
    c.qk_nope_head_dim = 32;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    c.n_routed_experts = 16;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 2;
    c.n_group = 4;
    c.topk_group = 2;
    c.max_position_embeddings = 1024;
  } else if (name == "tiny") {
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.moe_intermediate_size = 16;
    c.num_hidden_layers = 2;
    c.first_k_dense_replace = 1;
    c.num_attention_heads = 2;
    c.q_lora_rank = 24;
    c.kv_lora_rank = 16;
    c.qk_nope_head_dim = 8;
    c.qk_rope_head_dim = 8;
    c.v_head_dim = 8;
    c.n_routed_experts = 8;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 2;
    c.n_group = 4;
    c.topk_group = 2;
    c.max_position_embeddings = 256;
  } else {
    throw Error("unknown trainer preset '" + name + "' (shakespeare, tiny)", {"", "", "--preset"});
  }
  return c;
}

TrainSummary train(const TrainerOptions& given, const RunControl& control) {
  const std::string& dir = control.out_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create folder " + dir + ": " + ec.message());
  ThreadPool pool(control.threads);

  TrainerOptions options = given;
  ParamStore<float> ps;
  AdamW adam;
  TrainRng rng;
  int64_t start_step = 0;
  std::vector<json> metrics;
  uint64_t saved_fingerprint = 0;
  if (control.resume) {
    const std::string path = (fs::path(dir) / kStateFile).string();
    if (!fs::exists(path)) throw Error("no " + std::string(kStateFile) + " to resume from in " + dir);
    const auto state = SafetensorsFile::open(path);
    const auto& meta = state->metadata();
    auto meta_at = [&](const char* key) {
      auto it = meta.find(key);
      if (it == meta.end()) throw Error("missing metadata", {path, "", key});
      return it->second;
    };
    options = TrainerOptions::from_json(meta_at("options"), path);
    start_step = std::stoll(meta_at("step"));
    rng.state = std::stoull(meta_at("rng"));
    saved_fingerprint = std::stoull(meta_at("data_fingerprint"));
    ps = ParamStore<float>::init(options.model, 0, 0.0);
    adam = AdamW(ps, {options.beta1, options.beta2, 1e-8, options.weight_decay});
    adam.set_steps(std::stoll(meta_at("adam_steps")));
    auto& params = ps.all();
    for (size_t i = 0; i < params.size(); ++i) {
      auto load = [&](const std::string& name, std::vector<float>& into) {
        const Tensor t = state->tensor(name);
        if (t.dtype() != DType::F32 || size_t(t.numel()) != into.size())
          throw Error("wrong dtype or size", {path, name, ""});
        std::copy_n(t.data<const float>(), into.size(), into.begin());
      };
      load("param/" + params[i].spec.name, params[i].value);
      load("adam_m/" + params[i].spec.name, adam.first_moments()[i]);
      load("adam_v/" + params[i].spec.name, adam.second_moments()[i]);
    }
    metrics = read_metrics(dir, start_step);
  } else {
    if (options.mtp_only && options.init_from.empty())
      throw Error("--mtp-only fine-tunes the MTP module of a trained model: give the checkpoint with --init");
    if (options.mtp_target == MtpTarget::MainModel && !options.mtp_only)
      throw Error("--mtp-target main distills the main model into the MTP module: it needs --mtp-only");
    if (!options.init_from.empty()) {
      ps = import_hf_checkpoint(options.init_from);  // the values inference multiplies
      options.model = ps.config();
    }
    TrainModel<float>::check_config(options.model);
    if (options.init_from.empty()) ps = ParamStore<float>::init(options.model, options.seed, options.init_std);
    adam = AdamW(ps, {options.beta1, options.beta2, 1e-8, options.weight_decay});
    rng.state = options.seed;
    if (!options.tokenizer_dir.empty() && fs::path(options.tokenizer_dir) != fs::path(dir))
      for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
        fs::copy_file(fs::path(options.tokenizer_dir) / name, fs::path(dir) / name,
                      fs::copy_options::overwrite_existing, ec);
        if (ec) throw Error("cannot copy " + (fs::path(options.tokenizer_dir) / name).string() + ": " + ec.message());
      }
    options.tokenizer_dir = dir;
  }
  const ModelConfig& cfg = options.model;
  if (options.mtp_only) {
    if (cfg.num_nextn_predict_layers == 0) throw Error("--mtp-only: the model has no MTP module", {"", "", "--init"});
    for (auto& p : ps.all()) p.frozen = !TrainModel<float>::is_mtp_parameter(cfg, p.spec.name);
  }
  const auto tokenizer = Tokenizer::load(options.tokenizer_dir);
  if (tokenizer->vocab_size() > cfg.vocab_size)
    throw Error("the tokenizer has " + std::to_string(tokenizer->vocab_size()) + " tokens but the model's vocab_size is " +
                    std::to_string(cfg.vocab_size),
                {"", "", "vocab_size"});
  const TokenDataset data = TokenDataset::from_text(read_text_file(options.data_path), *tokenizer,
                                                    options.val_fraction, options.seq_len, options.data_path);
  if (control.resume && data.fingerprint() != saved_fingerprint)
    throw Error("the data file tokenizes differently from the run being resumed", {options.data_path, "", ""});
  {
    std::ofstream f(fs::path(dir) / "train_options.json", std::ios::binary);
    f << options.to_json() << '\n';
  }
  const std::vector<TrainBatch> val = data.validation(options.batch, options.seq_len, options.eval_windows);
  const TrainModel<float> model(cfg);
  TrainSettings settings{options.precision, options.mtp_weight, options.balance_alpha, options.mtp_target,
                         options.mtp_only};
  const std::vector<std::string> biases = bias_names(cfg);

  TrainSummary summary;
  summary.parameters = ps.numel();
  summary.unigram_entropy = data.unigram_entropy();
  const double fma_peak = measure_fma_peak_gflops(&pool);
  const bool tty = isatty(fileno(control.log)) == 1;
  std::fprintf(control.log,
               "train: %lld parameters, %lld training / %lld validation tokens (unigram entropy %.3f nats), %s, "
               "%d threads, FMA peak %.0f GFLOP/s\n",
               (long long)summary.parameters, (long long)data.train_tokens(), (long long)data.val_tokens(),
               summary.unigram_entropy, precision_name(options.precision), pool.size(), fma_peak);

  auto checkpoint = [&](int64_t step) {
    export_hf_checkpoint(ps, dir, options.fp8_checkpoint, "");
    save_state(dir, options, ps, adam, step, rng, data.fingerprint());
    write_metrics(dir, metrics);
    write_curve(dir, metrics, options, control.overlay);
  };

  const int64_t end_step = control.stop_after >= 0 ? std::min(options.steps, control.stop_after) : options.steps;
  const double t_start = now_seconds();
  double gemm_flops = 0, gemm_seconds = 0, last_val = NAN, last_acceptance = NAN;
  int64_t tokens_done = 0;
  for (int64_t step = start_step; step < end_step; ++step) {
    const double t0 = now_seconds();
    const GemmCounters g0 = gemm_counters();
    const TrainBatch batch = data.sample(options.batch, options.seq_len, rng);
    ps.zero_grad();
    const StepResult r = model.run(ps, batch, settings, true, &pool);
    const double grad_norm = clip_gradients(ps, options.clip);
    const double lr = learning_rate(step, options.steps, options.warmup, options.lr, options.min_lr_ratio);
    adam.step(ps, lr);
    // Auxiliary-loss-free balancing: b_i += γ · sign(mean load − load_i), per MoE layer.
    for (size_t l = 0; l < biases.size() && l < r.expert_load.size(); ++l) {
      if (ps.at(biases[l]).frozen) continue;  // a frozen main model keeps its routing
      auto& bias = ps.at(biases[l]).value;
      const auto& load = r.expert_load[l];
      double mean = 0;
      for (int64_t v : load) mean += double(v);
      mean /= double(load.size());
      for (size_t e = 0; e < load.size(); ++e) {
        const double d = mean - double(load[e]);
        bias[e] += float(options.bias_gamma * (d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0));
      }
    }
    const GemmCounters g1 = gemm_counters();
    const double dt = now_seconds() - t0;
    const int64_t tokens = options.batch * options.seq_len;
    tokens_done += tokens;
    gemm_flops += g1.flops - g0.flops;
    gemm_seconds += dt;
    json m = {{"step", step + 1}, {"loss", r.main_loss}, {"mtp_loss", r.mtp_loss}, {"lr", lr},
              {"grad_norm", grad_norm}, {"load_max_mean", load_max_over_mean(r.expert_load)},
              {"tokens_per_second", double(tokens) / dt}, {"gemm_gflops", (g1.flops - g0.flops) / dt / 1e9}};
    if (options.balance_alpha > 0) m["balance_loss"] = r.balance_loss;
    const bool last = step + 1 == options.steps;
    if ((options.eval_every > 0 && (step + 1) % options.eval_every == 0) || last) {
      const Evaluation e = evaluate(model, ps, val, settings, &pool);
      m["val_loss"] = e.loss, m["val_mtp_loss"] = e.mtp_loss, m["mtp_acceptance"] = e.acceptance;
      m["mtp_accuracy"] = e.accuracy;
      // With the main model frozen its loss never moves: the line shows the MTP module's instead.
      last_val = options.mtp_only ? e.mtp_loss : e.loss;
      last_acceptance = e.acceptance;
    }
    metrics.push_back(m);
    const double elapsed = now_seconds() - t_start;
    const double eta = elapsed / double(step + 1 - start_step) * double(options.steps - step - 1);
    char line[360];
    std::snprintf(line, sizeof(line),
                  "step %lld/%lld | %s %.3f | val %.3f | %s%.0f tok/s | %.2f of FMA peak | load max/mean %.2f | "
                  "lr %.2e | ETA %s",
                  (long long)(step + 1), (long long)options.steps,
                  options.mtp_only ? (options.mtp_target == MtpTarget::MainModel ? "MTP KL" : "MTP loss") : "loss",
                  options.mtp_only ? r.mtp_loss : r.main_loss, last_val,
                  options.mtp_only ? ("draft acceptance " + std::to_string(last_acceptance).substr(0, 5) + " | ").c_str()
                                   : "",
                  double(tokens) / dt,
                  (g1.flops - g0.flops) / dt / 1e9 / fma_peak, load_max_over_mean(r.expert_load), lr,
                  duration_text(eta).c_str());
    if (tty) {
      std::fprintf(control.log, "\r\033[K%s", line);
      if (m.contains("val_loss")) std::fputc('\n', control.log);
    } else if (m.contains("val_loss") || (step + 1) % 10 == 0 || step == start_step) {
      std::fprintf(control.log, "%s\n", line);
    }
    std::fflush(control.log);
    if (options.checkpoint_every > 0 && (step + 1) % options.checkpoint_every == 0 && step + 1 < end_step)
      checkpoint(step + 1);
  }
  if (tty) std::fputc('\n', control.log);
  checkpoint(end_step);

  summary.steps = end_step;
  summary.seconds = now_seconds() - t_start;
  summary.tokens_per_second = double(tokens_done) / std::max(summary.seconds, 1e-9);
  summary.gemm_fraction_of_peak = gemm_seconds > 0 ? gemm_flops / gemm_seconds / 1e9 / fma_peak : 0;
  const size_t tail = std::min(metrics.size(), std::max<size_t>(1, metrics.size() / 10));
  double loss = 0, load = 0;
  for (size_t i = metrics.size() - tail; i < metrics.size(); ++i)
    loss += metrics[i]["loss"].get<double>(), load += metrics[i]["load_max_mean"].get<double>();
  if (tail > 0) summary.train_loss = loss / double(tail), summary.load_max_over_mean = load / double(tail);
  for (auto it = metrics.rbegin(); it != metrics.rend(); ++it)
    if (it->contains("val_loss")) {
      summary.val_loss = (*it)["val_loss"], summary.val_mtp_loss = (*it)["val_mtp_loss"];
      summary.mtp_acceptance = (*it)["mtp_acceptance"], summary.mtp_accuracy = (*it)["mtp_accuracy"];
      break;
    }
  return summary;
}

}  // namespace deepmoe
