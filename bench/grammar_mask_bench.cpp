// Token-mask speed on one thread over the DeepSeek-V3 vocabulary (129,280 ids): generates --schemas
// API-style JSON Schemas (objects of strings with lengths, formats and enums, bounded integers, numbers,
// booleans, arrays, nested objects; half with additionalProperties false) and one matching instance each,
// compiles each schema, then forces the instance's canonical tokenization through the matcher, timing every
// mask. Prints one JSON line: compile p50/p99 and mask p50/p99/p99.9 (microseconds, thread CPU time and
// wall time), instances accepted, and the load average (the machine may be shared).
// Tables are shared between the schemas' maskers through the vocabulary (a serving process does the same
// across requests); --shared-tables 0 makes every masker build its own, as in a process's first request.
// --slowest N also prints the N slowest masks, one JSON line each: the schema, the text before the mask, the
// tables it built, the trie nodes those walks visited and the parser configurations it added.
//   build/bench/grammar_mask_bench [--schemas 300] [--seed 1] [--slowest 0] [--shared-tables 1]
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <random>
#include <string>

#include "grammar/grammar_matcher.h"
#include "grammar/json_schema_compiler.h"
#include "tokenizer/tokenizer.h"

using namespace deepmoe;
using Json = nlohmann::ordered_json;

namespace {

constexpr int32_t kModelVocab = 129280;

double cpu_us() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) * 1e6 + double(t.tv_nsec) / 1e3;
}
double wall_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  size_t k = std::min(v.size() - 1, size_t(p * double(v.size())));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(k), v.end());
  return v[k];
}

const char* kWords[] = {"id", "name", "title", "email", "created_at", "status", "count", "price", "tags", "owner",
                        "description", "url", "enabled", "score", "items", "address", "city", "zip", "kind",
                        "version", "user_id", "amount", "currency", "notes", "start_date", "ip", "uuid"};
const char* kText[] = {"alpha", "Hello, world", "Zoë", "東京", "a \"quoted\" word", "line\nbreak", "x", "",
                       "The quick brown fox jumps over the lazy dog", "42 apples"};

struct Generator {
  std::mt19937 rng;
  int pick(int n) { return int(rng() % uint32_t(n)); }

  // A schema and a value it accepts.
  std::pair<Json, Json> value(int depth) {
    int kind = pick(depth >= 2 ? 7 : 9);
    switch (kind) {
      case 0: {
        Json s{{"type", "string"}};
        if (pick(2)) s["maxLength"] = 64;
        return {s, Json(kText[pick(10)])};
      }
      case 1: {
        static const char* kFormats[] = {"date", "date-time", "email", "uuid", "ipv4", "uri"};
        static const char* kValues[] = {"2024-05-17", "2024-05-17T10:20:30Z", "ada@example.org",
                                        "123e4567-e89b-12d3-a456-426614174000", "192.168.1.20",
                                        "https://example.org/a/b?q=1"};
        int f = pick(6);
        return {Json{{"type", "string"}, {"format", kFormats[f]}}, Json(kValues[f])};
      }
      case 2: {
        Json values = Json::array({"draft", "active", "archived", "deleted"});
        return {Json{{"enum", values}}, values[size_t(pick(4))]};
      }
      case 3: {
        int lo = pick(100), hi = lo + 1 + pick(10000);
        return {Json{{"type", "integer"}, {"minimum", lo}, {"maximum", hi}}, Json(lo + pick(hi - lo + 1))};
      }
      case 4: return {Json{{"type", "number"}}, Json(double(pick(100000)) / 100.0)};
      case 5: return {Json{{"type", "boolean"}}, Json(bool(pick(2)))};
      case 6: return {Json{{"type", "integer"}}, Json(pick(1000000) - 500000)};
      case 7: {
        auto [item_s, item_v] = value(depth + 1);
        Json arr = Json::array();
        int n = pick(4);
        for (int i = 0; i < n; ++i) arr.push_back(i == 0 ? item_v : value_like(item_s, item_v));
        return {Json{{"type", "array"}, {"items", item_s}}, arr};
      }
      default: return object(depth + 1);
    }
  }
  Json value_like(const Json&, const Json& v) { return v; }

  std::pair<Json, Json> object(int depth) {
    Json props = Json::object(), inst = Json::object(), required = Json::array();
    int n = 2 + pick(8);
    for (int i = 0; i < n; ++i) {
      std::string key = kWords[pick(27)];
      if (props.contains(key)) continue;
      auto [s, v] = value(depth);
      props[key] = s;
      bool req = pick(3) != 0;
      if (req) required.push_back(key);
      if (req || pick(2)) inst[key] = v;
    }
    Json schema{{"type", "object"}, {"properties", props}, {"required", required}};
    if (pick(2)) schema["additionalProperties"] = false;
    return {schema, inst};
  }
};

}  // namespace

int main(int argc, char** argv) {
  int schemas = 300;
  unsigned seed = 1;
  int slowest = 0;
  bool shared_tables = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--schemas")) schemas = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seed")) seed = unsigned(std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--slowest")) slowest = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--shared-tables")) shared_tables = std::atoi(argv[i + 1]) != 0;
  }
  auto tok = Tokenizer::load(std::string(DEEPMOE_SOURCE_DIR) + "/assets/tokenizer");
  std::vector<std::string> spellings(static_cast<size_t>(kModelVocab));
  for (int32_t id = 0; id < tok->vocab_size(); ++id)
    if (!tok->is_special(id)) spellings[size_t(id)] = tok->token_bytes(id);
  double t0 = wall_us();
  auto trie = std::make_shared<grammar::TokenTrie>(std::move(spellings), tok->eos_id());
  double trie_ms = (wall_us() - t0) / 1e3;

  Generator gen{std::mt19937(seed)};
  std::vector<double> compile_cpu, mask_cpu, mask_wall, first_mask_cpu;
  int accepted = 0, total = 0;
  size_t tables_needed = 0, tables_shared = 0;
  grammar::TokenBitmask mask(grammar::mask_words(kModelVocab));
  struct SlowMask {
    double cpu_us;
    int schema;
    std::string before;
    size_t tables, nodes_walked, configs_added;
  };
  std::vector<SlowMask> slow;
  std::vector<Json> schema_texts;
  for (int s = 0; s < schemas; ++s) {
    auto [schema, instance] = gen.object(0);
    double c0 = cpu_us();
    auto automaton = std::make_shared<grammar::PushdownAutomaton>(grammar::compile_json_schema(schema.dump()));
    auto masker = std::make_shared<grammar::TokenMasker>(automaton, trie);
    masker->set_share_tables(shared_tables);
    compile_cpu.push_back(cpu_us() - c0);
    std::vector<int32_t> ids = tok->encode(instance.dump(), false, false);
    ids.push_back(tok->eos_id());
    grammar::GrammarMatcher m(automaton, masker);
    if (slowest > 0) schema_texts.push_back(schema);
    bool ok = true;
    std::string before;
    for (size_t i = 0; i < ids.size(); ++i) {
      grammar::MaskStats s0 = masker->stats();
      size_t configs0 = automaton->config_count();
      double w = wall_us(), c = cpu_us();
      m.fill_mask(mask);
      double dc = cpu_us() - c, dw = wall_us() - w;
      mask_cpu.push_back(dc);
      mask_wall.push_back(dw);
      if (slowest > 0) {
        const grammar::MaskStats& s1 = masker->stats();
        slow.push_back({dc, s, before, s1.position_tables - s0.position_tables,
                        s1.table_nodes_walked - s0.table_nodes_walked, automaton->config_count() - configs0});
        std::sort(slow.begin(), slow.end(), [](const SlowMask& a, const SlowMask& b) { return a.cpu_us > b.cpu_us; });
        if (slow.size() > size_t(slowest)) slow.pop_back();
        if (ids[i] != tok->eos_id()) before += tok->token_bytes(ids[i]);
      }
      if (i == 0) first_mask_cpu.push_back(dc);
      if (!grammar::mask_test(mask, ids[i]) || !m.accept_token(ids[i])) { ok = false; break; }
    }
    accepted += ok && m.is_terminated();
    tables_needed += masker->stats().position_tables;
    tables_shared += masker->stats().shared_tables_found;
    ++total;
  }
  double load[3] = {0, 0, 0};
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
    std::fclose(f);
  }
  Json out{{"schemas", total}, {"instances_accepted", accepted}, {"masks", mask_cpu.size()},
           {"vocab", kModelVocab}, {"trie_build_ms", trie_ms}, {"trie_nodes", trie->nodes().size()},
           {"compile_cpu_us_p50", pct(compile_cpu, 0.5)}, {"compile_cpu_us_p99", pct(compile_cpu, 0.99)},
           {"mask_cpu_us_p50", pct(mask_cpu, 0.5)}, {"mask_cpu_us_p99", pct(mask_cpu, 0.99)},
           {"mask_cpu_us_p999", pct(mask_cpu, 0.999)}, {"mask_cpu_us_max", pct(mask_cpu, 1.0)},
           {"mask_wall_us_p50", pct(mask_wall, 0.5)}, {"mask_wall_us_p99", pct(mask_wall, 0.99)},
           {"mask_wall_us_p999", pct(mask_wall, 0.999)}, {"first_mask_cpu_us_p50", pct(first_mask_cpu, 0.5)},
           {"shared_tables", shared_tables}, {"tables_needed", tables_needed}, {"tables_found_shared", tables_shared},
           {"loadavg_1m", load[0]}};
  std::printf("%s\n", out.dump().c_str());
  for (const SlowMask& m : slow)
    std::printf("%s\n", Json{{"mask_cpu_us", m.cpu_us}, {"tables_built", m.tables}, {"nodes_walked", m.nodes_walked},
                             {"configs_added", m.configs_added}, {"before", m.before},
                             {"schema", schema_texts[size_t(m.schema)]}}.dump().c_str());
  return accepted == total ? 0 : 1;
}
