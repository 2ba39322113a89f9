#include "model/gate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "kernels/softmax.h"
#include "kernels/topk.h"
#include "model/config.h"

namespace deepmoe {

void route_tokens(const ModelConfig& c, const float* logits, const float* bias, int64_t T, int32_t* topk_idx,
                  float* topk_weight) {
  const int E = int(c.n_routed_experts), k = int(c.num_experts_per_tok);
  const int groups = int(c.n_group), per_group = E / groups;
  const bool sigmoid = c.scoring_func == "sigmoid";
  const bool grouped = c.topk_method == "noaux_tc" || c.topk_method == "group_limited_greedy";
  // Group score: top-2 sum with the correction bias (noaux_tc), max otherwise (model.py Gate.forward).
  const bool top2_sum = c.topk_method == "noaux_tc";
  std::vector<float> s(static_cast<size_t>(E)), choice(static_cast<size_t>(E)), gscore(static_cast<size_t>(groups));
  std::vector<int> idx(static_cast<size_t>(k)), gidx(static_cast<size_t>(groups));
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits + t * E;
    if (sigmoid) {
      for (int e = 0; e < E; ++e) s[size_t(e)] = 1.0f / (1.0f + std::exp(-row[e]));
    } else {
      for (int e = 0; e < E; ++e) s[size_t(e)] = row[e];
      softmax_rows(s.data(), 1, E, E);
    }
    for (int e = 0; e < E; ++e) choice[size_t(e)] = s[size_t(e)] + (bias ? bias[e] : 0.0f);
    if (grouped && groups > 1) {
      for (int g = 0; g < groups; ++g) {
        const float* v = choice.data() + g * per_group;
        if (top2_sum) {
          int top[2];
          float val[2];
          const int n_top = std::min(2, per_group);
          topk(v, per_group, n_top, top, val);
          gscore[size_t(g)] = n_top == 2 ? val[0] + val[1] : val[0];
        } else {
          float m = v[0];
          for (int j = 1; j < per_group; ++j) m = std::max(m, v[j]);
          gscore[size_t(g)] = m;
        }
      }
      topk(gscore.data(), groups, int(c.topk_group), gidx.data());
      std::vector<bool> keep(static_cast<size_t>(groups), false);
      for (int i = 0; i < int(c.topk_group); ++i) keep[size_t(gidx[size_t(i)])] = true;
      for (int g = 0; g < groups; ++g)
        if (!keep[size_t(g)])
          for (int j = 0; j < per_group; ++j) choice[size_t(g * per_group + j)] = -std::numeric_limits<float>::infinity();
    }
    topk(choice.data(), E, k, idx.data());
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) sum += s[size_t(idx[size_t(i)])];
    const bool v3 = c.arch == ModelArch::DeepseekV3;
    const bool normalize = v3 ? c.norm_topk_prob : (k > 1 && c.norm_topk_prob);
    const bool scale = v3 ? true : !normalize;
    for (int i = 0; i < k; ++i) {
      float w = s[size_t(idx[size_t(i)])];
      if (normalize) w /= (sum + 1e-20f);
      if (scale) w *= float(c.routed_scaling_factor);
      topk_idx[t * k + i] = idx[size_t(i)];
      topk_weight[t * k + i] = w;
    }
  }
}

}  // namespace deepmoe
