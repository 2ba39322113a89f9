#include "train/param_store.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace deepmoe {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t name_hash(const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001B3ull;
  return h;
}

double uniform01(uint64_t& state) { return (double(splitmix64(state) >> 11) + 0.5) * 0x1.0p-53; }

}  // namespace

template <class R>
void ParamStore<R>::add(Param<R> p) {
  index_.emplace(p.spec.name, params_.size());
  params_.push_back(std::move(p));
}

template <class R>
ParamStore<R> ParamStore<R>::init(const ModelConfig& config, uint64_t seed, double init_std) {
  ParamStore<R> s;
  s.config_ = config;
  for (const TensorSpec& spec : checkpoint_layout(config, /*fp8=*/false)) {
    if (spec.shared_copy) continue;
    Param<R> p;
    p.spec = spec;
    const int64_t n = spec.numel();
    p.value.assign(static_cast<size_t>(n), R(0));
    p.grad.assign(static_cast<size_t>(n), R(0));
    if (spec.role == TensorRole::Norm) {
      std::fill(p.value.begin(), p.value.end(), R(1));
    } else if (spec.role != TensorRole::CorrectionBias) {
      uint64_t state = seed ^ name_hash(spec.name);
      for (int64_t i = 0; i < n; i += 2) {  // Box-Muller pairs
        const double u1 = uniform01(state), u2 = uniform01(state);
        const double r = std::sqrt(-2.0 * std::log(u1)) * init_std;
        p.value[size_t(i)] = R(float(r * std::cos(2 * std::numbers::pi * u2)));
        if (i + 1 < n) p.value[size_t(i + 1)] = R(float(r * std::sin(2 * std::numbers::pi * u2)));
      }
    }
    s.add(std::move(p));
  }
  return s;
}

template <class R>
template <class S>
ParamStore<S> ParamStore<R>::cast() const {
  ParamStore<S> out;
  out.config_ = config_;
  for (const Param<R>& p : params_) {
    Param<S> q;
    q.spec = p.spec;
    q.frozen = p.frozen;
    q.value.assign(p.value.begin(), p.value.end());
    q.grad.assign(p.value.size(), S(0));
    out.add(std::move(q));
  }
  return out;
}

template <class R>
Param<R>& ParamStore<R>::at(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("the model has no parameter " + name, {"", name, ""});
  return params_[it->second];
}

template <class R>
const Param<R>& ParamStore<R>::at(const std::string& name) const {
  return const_cast<ParamStore<R>*>(this)->at(name);
}

template <class R>
void ParamStore<R>::zero_grad() {
  for (auto& p : params_) std::fill(p.grad.begin(), p.grad.end(), R(0));
}

template <class R>
int64_t ParamStore<R>::numel() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.numel();
  return n;
}

template class ParamStore<float>;
template class ParamStore<double>;
template ParamStore<double> ParamStore<float>::cast<double>() const;
template ParamStore<float> ParamStore<float>::cast<float>() const;
template ParamStore<float> ParamStore<double>::cast<float>() const;

}  // namespace deepmoe
