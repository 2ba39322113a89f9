// `deepmoe eplb FILE`: runs EPLB (the expert-parallel load balancer) offline. FILE is JSON
//   {"weight": [[load per logical expert] per layer], "num_replicas": R, "num_groups": G, "num_nodes": N,
//    "num_gpus": P}
// and the policy is chosen as EPLB does (hierarchical when G % N == 0, else global). Prints JSON with phy2log,
// log2phy, logcnt and the per-GPU load before (no replicas, expert e on GPU ⌊e·P/E⌋) and after, per layer.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>

#include "checked_output.h"
#include "command.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "parallel/eplb.h"

namespace deepmoe::tools {
namespace {

int read_positive_int(const nlohmann::json& j, const char* field) {
  if (!j.contains(field)) throw Error("missing", ErrorContext{"", "", field});
  const auto& v = j.at(field);
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (int64_t(1) << 20))
    throw Error("must be an integer in [1, 1048576], got " + v.dump(), ErrorContext{"", "", field});
  return int(v.get<int64_t>());
}

double max_over_mean(const std::vector<double>& load) {
  const double mean = std::accumulate(load.begin(), load.end(), 0.0) / double(load.size());
  return mean > 0 ? *std::max_element(load.begin(), load.end()) / mean : 1.0;
}

void run_eplb(const std::string& path, int indent) {
  nlohmann::json in;
  try {
    try {
      in = nlohmann::json::parse(read_text_file(path, size_t(1) << 28));
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("not valid JSON: ") + e.what());
    }
    if (!in.is_object()) throw Error("expected a JSON object");
    if (!in.contains("weight") || !in["weight"].is_array() || in["weight"].empty())
      throw Error("must be a non-empty array of per-layer arrays", ErrorContext{"", "", "weight"});
    eplb::Matrix weight;
    for (const auto& layer : in["weight"]) {
      if (!layer.is_array() || layer.empty())
        throw Error("every layer must be a non-empty array of numbers", ErrorContext{"", "", "weight"});
      std::vector<float> row;
      for (const auto& v : layer) {
        if (!v.is_number()) throw Error("loads must be numbers, got " + v.dump(), ErrorContext{"", "", "weight"});
        row.push_back(v.get<float>());
      }
      weight.push_back(std::move(row));
    }
    const int replicas = read_positive_int(in, "num_replicas"), groups = read_positive_int(in, "num_groups");
    const int nodes = read_positive_int(in, "num_nodes"), gpus = read_positive_int(in, "num_gpus");
    eplb::Result r = eplb::rebalance_experts(weight, replicas, groups, nodes, gpus);

    nlohmann::ordered_json out;
    out["policy"] = r.policy;
    out["phy2log"] = r.phy2log;
    out["log2phy"] = r.log2phy;
    out["logcnt"] = r.logcnt;
    nlohmann::json before = nlohmann::json::array(), after = nlohmann::json::array();
    nlohmann::json ratio_before = nlohmann::json::array(), ratio_after = nlohmann::json::array();
    for (size_t l = 0; l < weight.size(); ++l) {
      auto b = eplb::gpu_loads_without_eplb(weight[l], gpus);
      auto a = eplb::gpu_loads(weight[l], r.phy2log[l], r.logcnt[l], gpus);
      before.push_back(b);
      after.push_back(a);
      ratio_before.push_back(max_over_mean(b));
      ratio_after.push_back(max_over_mean(a));
    }
    out["gpu_load_before"] = before;
    out["gpu_load_after"] = after;
    out["max_over_mean_before"] = ratio_before;
    out["max_over_mean_after"] = ratio_after;
    write_stdout(out.dump(indent) + "\n");
  } catch (const Error& e) {
    throw e.with_file(path);
  }
}

CommandRegistration registration{
    {"eplb", "Run the EPLB expert load balancer on a JSON load file and print the placement",
     [](CLI::App& sub) {
       auto path = std::make_shared<std::string>();
       auto indent = std::make_shared<int>(-1);
       sub.add_option("file", *path, "JSON with weight, num_replicas, num_groups, num_nodes, num_gpus")->required();
       sub.add_option("--indent", *indent, "Pretty-print with this indent (default: one line)");
       sub.callback([path, indent] { run_eplb(*path, *indent); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
