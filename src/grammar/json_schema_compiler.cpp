#include "grammar/json_schema_compiler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "core/error.h"
#include "grammar/code_point_set.h"
#include "grammar/json_string_pattern.h"
#include "grammar/pushdown_automaton.h"

namespace deepmoe::grammar {

namespace {

using Json = nlohmann::ordered_json;

constexpr int kMaxSchemaDepth = 200;
constexpr int kMaxRefChain = 64;
constexpr double kMaxExactBound = 1e15;

// Keywords that only annotate (never constrain); ignored.
const std::set<std::string>& annotation_keywords() {
  static const std::set<std::string> k = {
      "$schema", "$id", "$comment", "$anchor", "$dynamicAnchor", "$vocabulary", "title", "description",
      "default", "examples", "deprecated", "readOnly", "writeOnly", "contentEncoding", "contentMediaType",
      "contentSchema", "$defs", "definitions"};
  return k;
}

// Validation keywords of draft 2020-12 (and the common older spellings) the compiler cannot enforce.
const std::set<std::string>& unsupported_keywords() {
  static const std::set<std::string> k = {
      "not", "if", "dependentRequired", "dependentSchemas", "dependencies", "contains", "patternProperties",
      "propertyNames", "unevaluatedItems", "unevaluatedProperties", "multipleOf", "$dynamicRef",
      "$recursiveRef", "$recursiveAnchor", "additionalItems"};
  return k;
}

bool is_validation_keyword(const std::string& k) {
  static const std::set<std::string> supported = {
      "type", "enum", "const", "properties", "required", "additionalProperties", "items", "prefixItems",
      "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref", "minLength", "maxLength", "pattern", "format",
      "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "uniqueItems", "minProperties",
      "maxProperties"};
  return supported.count(k) || unsupported_keywords().count(k);
}

std::string pointer_escape(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

std::string child_path(const std::string& path, const std::string& key) { return path + "/" + pointer_escape(key); }

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(uint8_t(s[i + 1])) && std::isxdigit(uint8_t(s[i + 2]))) {
      out.push_back(char(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// The ECMA patterns each supported format stands for (anchored). They accept a subset of the format:
// dates keep February to 28 days and times have no leap second, so nothing invalid gets through.
const std::map<std::string, std::string>& format_patterns() {
  static const std::string d2 = "[0-9]{2}";
  static const std::string date =
      "[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|"
      "02-(?:0[1-9]|1[0-9]|2[0-8]))";
  static const std::string time =
      "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";
  static const std::string label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
  static const std::map<std::string, std::string> m = {
      {"date", "^" + date + "$"},
      {"time", "^" + time + "$"},
      {"date-time", "^" + date + "[Tt]" + time + "$"},
      {"email", "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@" + label + "(?:\\." +
                    label + ")+$"},
      {"uuid", "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"},
      {"ipv4", "^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"},
      {"uri", "^[A-Za-z][A-Za-z0-9+.-]*://" + label + "(?:\\." + label +
                  ")*(?::[0-9]{1,5})?(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*"
                  "(?:\\?(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?"
                  "(?:#(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$"},
  };
  (void)d2;
  return m;
}

class SchemaCompiler {
 public:
  SchemaCompiler(const Json& root, const JsonSchemaOptions& options, std::vector<std::string>* warnings)
      : root_(root), options_(options), warnings_(warnings), b_(options.limits) {}

  Grammar compile_root() {
    Symbol s = compile(root_, "", 0, false);
    uint32_t root = b_.declare("root");
    b_.add_alternative(root, {s});
    return b_.finish(root);
  }

  Grammar compile_any() {
    uint32_t root = b_.declare("root");
    b_.add_alternative(root, {any_value()});
    return b_.finish(root);
  }

 private:
  // ---- errors
  void unsupported(const std::string& keyword, const std::string& path, const std::string& why = "") {
    std::string msg = "json schema: keyword '" + keyword + "' at " + (path.empty() ? "/" : path) +
                      " is not supported" + (why.empty() ? "" : " (" + why + ")");
    if (!options_.lenient) throw Error(msg, ErrorContext{"", "", keyword});
    if (warnings_) warnings_->push_back(msg + "; ignored");
  }
  [[noreturn]] void invalid(const std::string& keyword, const std::string& path, const std::string& why) {
    throw Error("json schema: keyword '" + keyword + "' at " + (path.empty() ? "/" : path) + ": " + why,
                ErrorContext{"", "", keyword});
  }

  // ---- shared building blocks
  Sequence ws() {
    if (options_.whitespace == Whitespace::compact) return {};
    if (!ws_) {
      std::vector<Sequence> alts;
      alts.push_back({});
      alts.push_back(b_.literal(" "));
      Sequence nl = b_.literal("\n");
      ByteSet sp;
      sp.set(' ');
      sp.set('\t');
      nl.push_back(b_.repeat("indent", {b_.bytes(sp)}, 0, 20));
      alts.push_back(nl);
      ws_ = b_.choice("ws", std::move(alts));
    }
    return {*ws_};
  }
  void append(Sequence& a, const Sequence& b) { a.insert(a.end(), b.begin(), b.end()); }

  // Any escape JSON allows; for strings without length or pattern limits.
  Symbol generic_char() {
    if (generic_char_) return *generic_char_;
    CodePointSet minus;
    minus.add(0, 0x1F);
    minus.add('"');
    minus.add('\\');
    std::vector<Sequence> alts = utf8_alternatives(minus.complement(), b_);
    ByteSet simple;
    for (char c : std::string("\"\\/bfnrt")) simple.set(uint8_t(c));
    alts.push_back({b_.byte('\\'), b_.bytes(simple)});
    ByteSet hex;
    for (char c : std::string("0123456789abcdefABCDEF")) hex.set(uint8_t(c));
    Symbol h = b_.bytes(hex);
    alts.push_back({b_.byte('\\'), b_.byte('u'), h, h, h, h});
    generic_char_ = b_.choice("char", std::move(alts));
    return *generic_char_;
  }
  Symbol generic_string() {
    if (generic_string_) return *generic_string_;
    Sequence s{b_.byte('"'), b_.repeat("chars", {generic_char()}, 0, -1), b_.byte('"')};
    generic_string_ = b_.wrap("string", std::move(s));
    return *generic_string_;
  }
  Symbol digits_rule(int64_t min) {
    ByteSet d = ByteSet::range('0', '9');
    return b_.repeat("digits", {b_.bytes(d)}, min, -1);
  }
  // Unbounded numbers stay finite as IEEE doubles (what most JSON parsers read them into): at most 300 integer
  // digits, and with an exponent at most 8 integer digits and a positive exponent of at most 299 — so no output
  // reads as Infinity. Everything a parser can hold exactly or approximately is still allowed.
  Symbol magnitude(int64_t max_digits) {
    Sequence nonzero{b_.bytes(ByteSet::range('1', '9')),
                     b_.repeat("digits", {b_.bytes(ByteSet::range('0', '9'))}, 0, max_digits - 1)};
    return b_.choice("int-magnitude", {b_.literal("0"), nonzero});
  }
  Symbol generic_integer() {
    if (generic_integer_) return *generic_integer_;
    Symbol m = magnitude(300);
    generic_integer_ = b_.choice("integer", {{m}, {b_.byte('-'), m}});
    return *generic_integer_;
  }
  Symbol generic_number() {
    if (generic_number_) return *generic_number_;
    Symbol frac = b_.choice("fraction", {{}, {b_.byte('.'), digits_rule(1)}});
    ByteSet e;
    e.set('e');
    e.set('E');
    const ByteSet d = ByteSet::range('0', '9');
    Symbol small_exponent = b_.choice("exponent-digits", {{b_.bytes(d)},
                                                          {b_.bytes(d), b_.bytes(d)},
                                                          {b_.bytes(ByteSet::range('0', '2')), b_.bytes(d), b_.bytes(d)}});
    Symbol exp = b_.choice("exponent", {{b_.bytes(e), small_exponent},
                                        {b_.bytes(e), b_.byte('+'), small_exponent},
                                        {b_.bytes(e), b_.byte('-'), digits_rule(1)}});
    Symbol m = magnitude(8);
    Symbol mantissa = b_.choice("mantissa", {{m}, {b_.byte('-'), m}});
    generic_number_ = b_.choice("number", {{generic_integer(), frac}, {mantissa, frac, exp}});
    return *generic_number_;
  }
  Symbol any_value() {
    if (any_value_) return *any_value_;
    uint32_t value = b_.declare("value");
    any_value_ = Symbol::rule(value);
    Sequence member{generic_string()};
    append(member, ws());
    member.push_back(b_.byte(':'));
    append(member, ws());
    member.push_back(*any_value_);
    Symbol member_rule = b_.wrap("member", member);
    Sequence sep = ws();
    sep.push_back(b_.byte(','));
    append(sep, ws());
    Sequence more_member = sep;
    more_member.push_back(member_rule);
    Sequence members{member_rule, b_.repeat("members", more_member, 0, -1)};
    Sequence obj{b_.byte('{')};
    append(obj, ws());
    obj.push_back(b_.choice("members-opt", {{}, members}));
    append(obj, ws());
    obj.push_back(b_.byte('}'));
    Sequence more_value = sep;
    more_value.push_back(*any_value_);
    Sequence values{*any_value_, b_.repeat("values", more_value, 0, -1)};
    Sequence arr{b_.byte('[')};
    append(arr, ws());
    arr.push_back(b_.choice("values-opt", {{}, values}));
    append(arr, ws());
    arr.push_back(b_.byte(']'));
    b_.set_alternatives(value, {{b_.wrap("object", obj)}, {b_.wrap("array", arr)}, {generic_string()},
                                {generic_number()}, b_.literal("true"), b_.literal("false"), b_.literal("null")});
    return *any_value_;
  }

  // ---- $ref
  const Json& resolve(const std::string& ref, const std::string& path) {
    if (ref.empty() || ref[0] != '#') {
      unsupported("$ref", path, "only references inside the document ('#...') are supported, not '" + ref + "'");
      static const Json anything = true;
      return anything;
    }
    std::string pointer = percent_decode(ref.substr(1));
    if (!pointer.empty() && pointer[0] != '/') {
      unsupported("$ref", path, "anchor references ('" + ref + "') are not supported");
      static const Json anything = true;
      return anything;
    }
    try {
      return root_.at(Json::json_pointer(pointer));
    } catch (const std::exception&) {
      invalid("$ref", path, "'" + ref + "' does not point into the document");
    }
  }

  // The schema with any top-level $ref and allOf merged in (for merging with siblings).
  Json flatten(const Json& s, const std::string& path, int depth) {
    if (depth > kMaxRefChain) invalid("$ref", path, "reference chain longer than " + std::to_string(kMaxRefChain));
    if (!s.is_object()) return s;
    Json out = s;
    Json result = Json::object();
    bool have_parts = false;
    std::vector<Json> parts;
    if (out.contains("$ref")) {
      if (!out["$ref"].is_string()) invalid("$ref", path, "must be a string");
      parts.push_back(flatten(resolve(out["$ref"].get<std::string>(), path), path, depth + 1));
      out.erase("$ref");
      have_parts = true;
    }
    if (out.contains("allOf")) {
      if (!out["allOf"].is_array() || out["allOf"].empty()) invalid("allOf", path, "must be a non-empty array");
      for (size_t i = 0; i < out["allOf"].size(); ++i)
        parts.push_back(flatten(out["allOf"][i], child_path(path, "allOf/" + std::to_string(i)), depth + 1));
      out.erase("allOf");
      have_parts = true;
    }
    if (!have_parts) return out;
    Json merged = out;
    for (const Json& p : parts) merged = merge(merged, p, path, depth + 1);
    return merged;
  }

  static std::vector<std::string> type_list(const Json& s) {
    if (!s.contains("type")) return {};
    if (s["type"].is_string()) return {s["type"].get<std::string>()};
    std::vector<std::string> out;
    for (const Json& t : s["type"]) if (t.is_string()) out.push_back(t.get<std::string>());
    return out;
  }

  Json sub_property(const Json& s, const std::string& key) {
    if (s.contains("properties") && s["properties"].contains(key)) return s["properties"][key];
    if (s.contains("additionalProperties")) return s["additionalProperties"];
    return Json(options_.additional_properties_default);
  }

  // allOf of two schemas as one schema (exact), or unsupported.
  Json merge(const Json& a_in, const Json& b_in, const std::string& path, int depth) {
    if (depth > kMaxRefChain) invalid("allOf", path, "nested too deeply");
    Json a = flatten(a_in, path, depth + 1);
    Json b = flatten(b_in, path, depth + 1);
    if (a.is_boolean()) return a.get<bool>() ? b : a;
    if (b.is_boolean()) return b.get<bool>() ? a : b;
    if (!a.is_object() || !b.is_object()) invalid("allOf", path, "subschemas must be objects or booleans");
    Json out = a;
    for (auto it = b.begin(); it != b.end(); ++it) {
      const std::string& k = it.key();
      const Json& v = it.value();
      if (k == "properties" || k == "additionalProperties" || k == "items" || k == "prefixItems") continue;
      if (!out.contains(k)) {
        out[k] = v;
        continue;
      }
      const Json& mine = a[k];
      if (k == "type") {
        std::vector<std::string> ta = type_list(a), tb = type_list(b), both;
        for (const std::string& x : ta)
          for (const std::string& y : tb) {
            if (x == y) both.push_back(x);
            else if ((x == "integer" && y == "number") || (x == "number" && y == "integer")) both.push_back("integer");
          }
        std::sort(both.begin(), both.end());
        both.erase(std::unique(both.begin(), both.end()), both.end());
        if (both.empty()) return Json(false);
        out["type"] = Json(both);
      } else if (k == "required") {
        std::set<std::string> seen;
        Json req = Json::array();
        for (const Json& r : mine) if (r.is_string() && seen.insert(r.get<std::string>()).second) req.push_back(r);
        for (const Json& r : v) if (r.is_string() && seen.insert(r.get<std::string>()).second) req.push_back(r);
        out["required"] = req;
      } else if (k == "minimum" || k == "exclusiveMinimum" || k == "minLength" || k == "minItems" || k == "minProperties") {
        if (mine.is_number() && v.is_number()) out[k] = std::max(mine.get<double>(), v.get<double>()) == mine.get<double>() ? mine : v;
      } else if (k == "maximum" || k == "exclusiveMaximum" || k == "maxLength" || k == "maxItems" || k == "maxProperties") {
        if (mine.is_number() && v.is_number()) out[k] = std::min(mine.get<double>(), v.get<double>()) == mine.get<double>() ? mine : v;
      } else if (k == "enum" || k == "const") {
        Json va = k == "const" ? Json::array({mine}) : mine;
        Json vb = k == "const" ? Json::array({v}) : v;
        Json both = Json::array();
        for (const Json& x : va)
          for (const Json& y : vb)
            if (x == y) { both.push_back(x); break; }
        out.erase(k);
        out["enum"] = both;
      } else if (k == "uniqueItems") {
        out[k] = mine.is_boolean() && v.is_boolean() ? Json(mine.get<bool>() || v.get<bool>()) : v;
      } else if (annotation_keywords().count(k)) {
        // keep a's annotation
      } else if (mine == v) {
        // identical constraint
      } else if (k == "anyOf" || k == "oneOf") {
        // (A1|A2) ∧ (B1|B2): keep one here and push the other into every branch.
        Json branches = Json::array();
        for (const Json& x : mine) branches.push_back(merge(x, Json::object({{"anyOf", v}}), path, depth + 1));
        if (k == "oneOf") unsupported("oneOf", path, "two oneOf lists combined by allOf");
        out[k] = branches;
      } else {
        unsupported(k, path, "two different values combined by allOf");
      }
    }
    // properties / additionalProperties / items / prefixItems together, key by key.
    bool props = a.contains("properties") || b.contains("properties") || a.contains("additionalProperties") ||
                 b.contains("additionalProperties");
    if (props) {
      Json merged_props = Json::object();
      auto add_keys = [&](const Json& s) {
        if (!s.contains("properties")) return;
        for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it)
          if (!merged_props.contains(it.key()))
            merged_props[it.key()] = merge(sub_property(a, it.key()), sub_property(b, it.key()), path, depth + 1);
      };
      add_keys(a);
      add_keys(b);
      out["properties"] = merged_props;
      Json add_a = a.contains("additionalProperties") ? a["additionalProperties"] : Json(options_.additional_properties_default);
      Json add_b = b.contains("additionalProperties") ? b["additionalProperties"] : Json(options_.additional_properties_default);
      out["additionalProperties"] = merge(add_a, add_b, path, depth + 1);
    }
    if (a.contains("items") || b.contains("items") || a.contains("prefixItems") || b.contains("prefixItems")) {
      size_t pa = a.contains("prefixItems") ? a["prefixItems"].size() : 0;
      size_t pb = b.contains("prefixItems") ? b["prefixItems"].size() : 0;
      Json ia = a.contains("items") ? a["items"] : Json(true);
      Json ib = b.contains("items") ? b["items"] : Json(true);
      Json prefix = Json::array();
      for (size_t i = 0; i < std::max(pa, pb); ++i)
        prefix.push_back(merge(i < pa ? a["prefixItems"][i] : ia, i < pb ? b["prefixItems"][i] : ib, path, depth + 1));
      if (!prefix.empty()) out["prefixItems"] = prefix;
      out["items"] = merge(ia, ib, path, depth + 1);
    }
    return out;
  }

  // ---- the compiler proper
  Symbol compile(const Json& s, const std::string& path, int depth, bool in_embedded_resource) {
    if (depth > kMaxSchemaDepth) invalid("(nesting)", path, "schema nested deeper than " + std::to_string(kMaxSchemaDepth));
    if (s.is_boolean()) return s.get<bool>() ? any_value() : b_.nothing();
    if (!s.is_object()) invalid("(schema)", path, "a schema must be an object or a boolean");
    if (depth > 0 && s.contains("$id")) in_embedded_resource = true;

    // Keywords first: anything unenforceable is reported before work is done.
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      if (k == "if") {
        if (s.contains("then") || s.contains("else")) unsupported("if", path);
      } else if (k == "contains") {
        unsupported("contains", child_path(path, "contains"));
      } else if (k == "uniqueItems") {
        if (!it.value().is_boolean()) invalid(k, path, "must be a boolean");
        if (it.value().get<bool>() && !(s.contains("maxItems") && s["maxItems"].is_number() && s["maxItems"].get<double>() <= 1))
          unsupported("uniqueItems", path);
      } else if (unsupported_keywords().count(k)) {
        if (k == "additionalItems") continue;  // not a 2020-12 keyword: ignored as the specification says
        unsupported(k, path);
      }
    }

    if (s.contains("$ref")) {
      if (!s["$ref"].is_string()) invalid("$ref", path, "must be a string");
      if (in_embedded_resource) unsupported("$ref", path, "inside a subschema with its own $id");
      bool siblings = false;
      for (auto it = s.begin(); it != s.end(); ++it)
        if (it.key() != "$ref" && is_validation_keyword(it.key())) siblings = true;
      std::string ref = s["$ref"].get<std::string>();
      if (!siblings) return ref_rule(ref, path, depth);
      return compile(flatten(s, path, 0), path, depth + 1, in_embedded_resource);
    }
    if (s.contains("allOf")) return compile(flatten(s, path, 0), path, depth + 1, in_embedded_resource);

    if (s.contains("anyOf") || s.contains("oneOf")) {
      if (s.contains("anyOf") && s.contains("oneOf")) {
        Json first = s;
        first.erase("oneOf");
        Json rest = Json::object({{"oneOf", s["oneOf"]}});
        return compile(merge(first, rest, path, 0), path, depth + 1, in_embedded_resource);
      }
      const std::string k = s.contains("anyOf") ? "anyOf" : "oneOf";
      const Json& list = s[k];
      if (!list.is_array() || list.empty()) invalid(k, path, "must be a non-empty array");
      Json siblings = s;
      siblings.erase(k);
      bool has_siblings = false;
      for (auto it = siblings.begin(); it != siblings.end(); ++it)
        if (is_validation_keyword(it.key())) has_siblings = true;
      std::vector<Json> branches;
      for (size_t i = 0; i < list.size(); ++i)
        branches.push_back(has_siblings ? merge(siblings, list[i], child_path(path, k + "/" + std::to_string(i)), 0)
                                        : list[i]);
      if (k == "oneOf" && !provably_disjoint(branches))
        unsupported("oneOf", path, "branches not provably disjoint, so 'exactly one' cannot be enforced");
      std::vector<Sequence> alts;
      for (size_t i = 0; i < branches.size(); ++i)
        alts.push_back({compile(branches[i], child_path(path, k + "/" + std::to_string(i)), depth + 1, in_embedded_resource)});
      return b_.choice(k, std::move(alts));
    }

    if (s.contains("enum") || s.contains("const")) return enum_rule(s, path);

    std::vector<std::string> types;
    if (s.contains("type")) {
      const Json& t = s["type"];
      if (t.is_string()) types.push_back(t.get<std::string>());
      else if (t.is_array()) {
        for (const Json& x : t) {
          if (!x.is_string()) invalid("type", path, "entries must be strings");
          types.push_back(x.get<std::string>());
        }
      } else invalid("type", path, "must be a string or an array of strings");
      for (const std::string& x : types)
        if (x != "null" && x != "boolean" && x != "object" && x != "array" && x != "string" && x != "number" && x != "integer")
          invalid("type", path, "unknown type '" + x + "'");
    } else {
      types = {"null", "boolean", "object", "array", "string", "number"};
    }
    bool has_number = std::find(types.begin(), types.end(), "number") != types.end();
    std::vector<Sequence> alts;
    std::set<std::string> done;
    for (const std::string& t : types) {
      if (!done.insert(t).second) continue;
      if (t == "null") alts.push_back(b_.literal("null"));
      else if (t == "boolean") { alts.push_back(b_.literal("true")); alts.push_back(b_.literal("false")); }
      else if (t == "object") alts.push_back({object_rule(s, path, depth, in_embedded_resource)});
      else if (t == "array") alts.push_back({array_rule(s, path, depth, in_embedded_resource)});
      else if (t == "string") alts.push_back({string_rule(s, path)});
      else if (t == "number") alts.push_back({number_rule(s, path, false)});
      else if (t == "integer" && !has_number) alts.push_back({number_rule(s, path, true)});
    }
    return b_.choice(path.empty() ? "schema" : path, std::move(alts));
  }

  Symbol ref_rule(const std::string& ref, const std::string& path, int depth) {
    auto it = ref_rules_.find(ref);
    if (it != ref_rules_.end()) return Symbol::rule(it->second);
    const Json& target = resolve(ref, path);
    uint32_t rule = b_.declare(ref);
    ref_rules_.emplace(ref, rule);
    std::string target_path = percent_decode(ref.substr(1));
    Symbol body = compile(target, target_path, depth + 1, false);
    b_.add_alternative(rule, {body});
    return Symbol::rule(rule);
  }

  // Disjoint when every pair of branches declares disjoint types or disjoint constant values.
  bool provably_disjoint(const std::vector<Json>& branches) {
    auto types_of = [&](const Json& s) -> std::optional<std::set<std::string>> {
      if (s.is_boolean()) return s.get<bool>() ? std::nullopt : std::optional<std::set<std::string>>(std::set<std::string>{});
      if (s.contains("enum") || s.contains("const")) {
        std::set<std::string> out;
        Json values = s.contains("const") ? Json::array({s["const"]}) : s["enum"];
        for (const Json& v : values) out.insert("=" + v.dump());
        return out;
      }
      if (!s.contains("type")) return std::nullopt;
      std::set<std::string> out;
      for (const std::string& t : type_list(s)) out.insert(t);
      return out;
    };
    auto type_of_value = [](const std::string& dumped) -> std::string {
      Json v = Json::parse(dumped.substr(1));
      if (v.is_null()) return "null";
      if (v.is_boolean()) return "boolean";
      if (v.is_object()) return "object";
      if (v.is_array()) return "array";
      if (v.is_string()) return "string";
      return "number";
    };
    auto overlap = [&](const std::string& x, const std::string& y) {
      if (x == y) return true;
      bool cx = x[0] == '=', cy = y[0] == '=';
      if (cx && cy) {
        return Json::parse(x.substr(1)) == Json::parse(y.substr(1));
      }
      std::string tx = cx ? type_of_value(x) : x, ty = cy ? type_of_value(y) : y;
      auto num = [](const std::string& t) { return t == "number" || t == "integer"; };
      if (num(tx) && num(ty)) return true;
      return tx == ty;
    };
    std::vector<std::optional<std::set<std::string>>> sets;
    for (const Json& b : branches) sets.push_back(types_of(flatten(b, "", 0)));
    for (size_t i = 0; i < sets.size(); ++i)
      for (size_t j = i + 1; j < sets.size(); ++j) {
        if (!sets[i] || !sets[j]) return false;
        for (const std::string& x : *sets[i])
          for (const std::string& y : *sets[j])
            if (overlap(x, y)) return false;
      }
    return true;
  }

  Symbol enum_rule(const Json& s, const std::string& path) {
    Json values = Json::array();
    if (s.contains("enum")) {
      if (!s["enum"].is_array()) invalid("enum", path, "must be an array");
      values = s["enum"];
    }
    if (s.contains("const")) {
      if (s.contains("enum")) {
        Json both = Json::array();
        for (const Json& v : values) if (v == s["const"]) both.push_back(v);
        values = both;
      } else {
        values = Json::array({s["const"]});
      }
    }
    Json rest = s;
    rest.erase("enum");
    rest.erase("const");
    bool constrained = false;
    for (auto it = rest.begin(); it != rest.end(); ++it)
      if (is_validation_keyword(it.key())) constrained = true;
    std::unique_ptr<PushdownAutomaton> check;
    if (constrained) {
      // Keep only the values the rest of the schema accepts, checked with the rest compiled on its own.
      JsonSchemaOptions o = options_;
      o.whitespace = Whitespace::compact;
      SchemaCompiler sub(root_, o, warnings_);
      Symbol sym = sub.compile(rest, path, 0, false);
      uint32_t r = sub.b_.declare("root");
      sub.b_.add_alternative(r, {sym});
      check = std::make_unique<PushdownAutomaton>(sub.b_.finish(r));
    }
    std::vector<std::string> texts;
    std::set<std::string> seen;
    for (const Json& v : values) {
      std::string text = v.dump();
      if (!seen.insert(text).second) continue;
      if (check) {
        auto c = check->initial();
        for (char ch : text) {
          if (c == PushdownAutomaton::kDead) break;
          c = check->step(c, uint8_t(ch));
        }
        if (!check->accepts(c)) continue;
      }
      texts.push_back(std::move(text));  // constants keep their compact spelling in every whitespace mode
    }
    if (texts.empty()) return b_.nothing();
    return b_.literal_set("enum", texts);
  }

  // The key of a property not named in `names`: a canonically encoded string (one spelling per string, so
  // "a" cannot sneak in as "\u0061") outside the set, built from the trie of the names.
  Symbol key_not_in(const std::vector<std::string>& names) {
    Symbol any_char = json_char_in(any_code_point(), b_);
    Symbol any_tail = b_.repeat("key-chars", {any_char}, 0, -1);
    struct TrieNode {
      std::map<uint32_t, size_t> children;
      bool end = false;
    };
    std::vector<TrieNode> trie(1);
    for (const std::string& name : names) {
      size_t node = 0;
      for (size_t i = 0; i < name.size();) {
        unsigned char c = uint8_t(name[i]);
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
        for (int k = 1; k < len && i + size_t(k) < name.size(); ++k) cp = (cp << 6) | (uint8_t(name[i + size_t(k)]) & 0x3F);
        i += size_t(len);
        auto it = trie[node].children.find(cp);
        if (it == trie[node].children.end()) {
          trie.push_back({});
          it = trie[node].children.emplace(cp, trie.size() - 1).first;
        }
        node = it->second;
      }
      trie[node].end = true;
    }
    std::vector<Symbol> rule_of(trie.size());
    std::vector<uint32_t> ids(trie.size());
    for (size_t n = 0; n < trie.size(); ++n) ids[n] = b_.declare("other-key");
    for (size_t n = 0; n < trie.size(); ++n) {
      std::vector<Sequence> alts;
      if (!trie[n].end) alts.push_back({});
      CodePointSet others;
      for (auto& [cp, child] : trie[n].children) {
        CodePointSet one;
        one.add(cp);
        alts.push_back({json_char_in(one, b_), Symbol::rule(ids[child])});
        others.add(cp);
      }
      CodePointSet rest = others.complement();
      if (!rest.empty()) alts.push_back({json_char_in(rest, b_), any_tail});
      b_.set_alternatives(ids[n], std::move(alts));
    }
    return b_.wrap("other-key-string", {b_.byte('"'), Symbol::rule(ids[0]), b_.byte('"')});
  }

  Symbol object_rule(const Json& s, const std::string& path, int depth, bool embedded) {
    std::vector<std::string> names;
    std::vector<Json> schemas;
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) invalid("properties", path, "must be an object");
      for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it) {
        names.push_back(it.key());
        schemas.push_back(it.value());
      }
    }
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) invalid("required", path, "must be an array");
      for (const Json& r : s["required"]) {
        if (!r.is_string()) invalid("required", path, "entries must be strings");
        required.insert(r.get<std::string>());
      }
    }
    Json additional = s.contains("additionalProperties") ? s["additionalProperties"] : Json(options_.additional_properties_default);
    for (const std::string& r : required)
      if (std::find(names.begin(), names.end(), r) == names.end()) {
        names.push_back(r);
        schemas.push_back(additional);
      }
    bool additional_allowed = !(additional.is_boolean() && !additional.get<bool>());
    if (s.contains("minProperties")) {
      const Json& m = s["minProperties"];
      if (!m.is_number() || m.get<double>() < 0) invalid("minProperties", path, "must be a non-negative number");
      if (m.get<double>() > double(required.size())) unsupported("minProperties", path, "more than the required properties");
    }
    if (s.contains("maxProperties")) {
      const Json& m = s["maxProperties"];
      if (!m.is_number() || m.get<double>() < 0) invalid("maxProperties", path, "must be a non-negative number");
      if (additional_allowed || m.get<double>() < double(names.size()))
        unsupported("maxProperties", path, "fewer than the properties the object may have");
    }
    std::string ppath = child_path(path, "properties");
    std::vector<Symbol> kv;
    for (size_t i = 0; i < names.size(); ++i) {
      Sequence seq = b_.literal(Json(names[i]).dump());
      append(seq, ws());
      seq.push_back(b_.byte(':'));
      append(seq, ws());
      seq.push_back(compile(schemas[i], child_path(ppath, names[i]), depth + 1, embedded));
      kv.push_back(b_.wrap("property", seq));
    }
    Sequence sep = ws();
    sep.push_back(b_.byte(','));
    append(sep, ws());
    // Tails after the named properties: more properties of other names.
    Symbol tail_first{}, tail_rest{};
    if (additional_allowed) {
      Sequence akv{key_not_in(names)};
      append(akv, ws());
      akv.push_back(b_.byte(':'));
      append(akv, ws());
      akv.push_back(compile(additional, child_path(path, "additionalProperties"), depth + 1, embedded));
      Symbol akv_rule = b_.wrap("additional-property", akv);
      Sequence more = sep;
      more.push_back(akv_rule);
      tail_rest = b_.repeat("additional-properties", more, 0, -1);
      tail_first = b_.choice("additional-properties", {{}, {akv_rule, tail_rest}});
    } else {
      tail_first = b_.empty();
      tail_rest = tail_first;
    }
    // after[i][first]: properties i.. given whether none was written yet.
    Symbol next_first = tail_first, next_rest = tail_rest;
    for (size_t i = names.size(); i-- > 0;) {
      bool req = required.count(names[i]) > 0;
      Sequence with_first{kv[i], next_rest};
      Sequence with_rest = sep;
      with_rest.push_back(kv[i]);
      with_rest.push_back(next_rest);
      std::vector<Sequence> f{with_first}, r{with_rest};
      if (!req) {
        f.push_back({next_first});
        r.push_back({next_rest});
      }
      Symbol nf = b_.choice("properties", std::move(f));
      Symbol nr = b_.choice("properties", std::move(r));
      next_first = nf;
      next_rest = nr;
    }
    Sequence obj{b_.byte('{')};
    append(obj, ws());
    obj.push_back(next_first);
    append(obj, ws());
    obj.push_back(b_.byte('}'));
    return b_.wrap("object", obj);
  }

  static std::optional<int64_t> count_keyword(const Json& s, const char* k, const std::string& path) {
    if (!s.contains(k)) return std::nullopt;
    const Json& v = s[k];
    if (!v.is_number() || v.get<double>() < 0 || std::floor(v.get<double>()) != v.get<double>())
      throw Error(std::string("json schema: keyword '") + k + "' at " + (path.empty() ? "/" : path) +
                  ": must be a non-negative integer", ErrorContext{"", "", k});
    double d = v.get<double>();
    return d > 1e9 ? int64_t(1e9) : int64_t(d);
  }

  Symbol array_rule(const Json& s, const std::string& path, int depth, bool embedded) {
    std::vector<Json> prefix;
    if (s.contains("prefixItems")) {
      if (!s["prefixItems"].is_array()) invalid("prefixItems", path, "must be an array");
      for (const Json& p : s["prefixItems"]) prefix.push_back(p);
    }
    Json items = s.contains("items") ? s["items"] : Json(true);
    if (items.is_array()) invalid("items", path, "must be a schema (draft 2020-12 uses prefixItems for tuples)");
    int64_t min = count_keyword(s, "minItems", path).value_or(0);
    std::optional<int64_t> max = count_keyword(s, "maxItems", path);
    if (items.is_boolean() && !items.get<bool>()) max = std::min<int64_t>(max.value_or(int64_t(prefix.size())), int64_t(prefix.size()));
    if (max && *max < min) return b_.nothing();
    if (max && *max > 100000 && *max > min + 100000) max.reset();  // bounds beyond any output: no limit needed
    if (min > 100000) unsupported("minItems", path, "more than 100000 items");
    std::vector<Symbol> elem;
    for (size_t i = 0; i < prefix.size(); ++i)
      elem.push_back(compile(prefix[i], child_path(path, "prefixItems/" + std::to_string(i)), depth + 1, embedded));
    Symbol item_sym = compile(items, child_path(path, "items"), depth + 1, embedded);
    auto element = [&](int64_t i) { return size_t(i) < elem.size() ? elem[size_t(i)] : item_sym; };
    Sequence sep = ws();
    sep.push_back(b_.byte(','));
    append(sep, ws());
    // tail(i): elements from index i on, i already written.
    int64_t fixed = std::max<int64_t>(int64_t(prefix.size()), min);
    Symbol tail{};
    if (!max) {
      Sequence more = sep;
      more.push_back(item_sym);
      Symbol loop = b_.repeat("items", more, 0, -1);
      if (fixed == 0) tail = b_.choice("items", {{}, {item_sym, loop}});
      else tail = loop;
    } else {
      tail = b_.empty();
    }
    int64_t last = max ? *max : fixed;
    for (int64_t i = last; i-- > 0;) {
      Sequence seq;
      if (i > 0) seq = sep;
      seq.push_back(element(i));
      seq.push_back(tail);
      std::vector<Sequence> alts{seq};
      if (i >= min) alts.push_back({});
      tail = b_.choice("items", std::move(alts));
    }
    Sequence arr{b_.byte('[')};
    append(arr, ws());
    arr.push_back(tail);
    append(arr, ws());
    arr.push_back(b_.byte(']'));
    return b_.wrap("array", arr);
  }

  Symbol string_rule(const Json& s, const std::string& path) {
    std::optional<int64_t> min = count_keyword(s, "minLength", path);
    std::optional<int64_t> max = count_keyword(s, "maxLength", path);
    if (min && *min == 0) min.reset();
    bool has_pattern = s.contains("pattern"), has_format = s.contains("format");
    if (has_pattern && !s["pattern"].is_string()) invalid("pattern", path, "must be a string");
    if (has_format && !s["format"].is_string()) invalid("format", path, "must be a string");
    std::string format = has_format ? s["format"].get<std::string>() : "";
    if (has_format && !format_patterns().count(format)) {
      unsupported("format", path, "format '" + format + "' is not one of date, time, date-time, email, uuid, ipv4, uri");
      has_format = false;
    }
    int restrictions = int(has_pattern) + int(has_format) + int(min.has_value() || max.has_value());
    if (restrictions > 1) {
      std::string which = has_pattern ? "pattern" : "format";
      unsupported(which, path, "combined with another string restriction (pattern, format, minLength/maxLength)");
      if (has_pattern && has_format) has_format = false;
      if (has_pattern || has_format) { min.reset(); max.reset(); }
    }
    if (has_pattern || has_format) {
      std::string pattern = has_pattern ? s["pattern"].get<std::string>() : format_patterns().at(format);
      try {
        Symbol body = compile_string_pattern(pattern, b_);
        return b_.wrap("pattern-string", {b_.byte('"'), body, b_.byte('"')});
      } catch (const Error& e) {
        unsupported(has_pattern ? "pattern" : "format", path, e.message());
        return generic_string();
      }
    }
    if (!min && !max) return generic_string();
    if (max && *max > 100000) {
      if (!min) return generic_string();
      max.reset();
    }
    if (min && *min > 100000) unsupported("minLength", path, "more than 100000 characters");
    // One rule per pair of bounds: strings of the same lengths then share their counter chain and their
    // closing quote, so the masker's tables for them are shared too.
    auto bounds = std::make_pair(min.value_or(0), max.value_or(-1));
    auto known = bounded_strings_.find(bounds);
    if (known != bounded_strings_.end()) return known->second;
    if (!bounded_char_) bounded_char_ = json_char_in(any_code_point(), b_);
    Symbol rule = b_.wrap("string", {b_.byte('"'), b_.repeat("string-chars", {*bounded_char_}, bounds.first, bounds.second),
                                     b_.byte('"')});
    bounded_strings_.emplace(bounds, rule);
    return rule;
  }

  // ---- numbers
  // Canonical decimal strings of equal length lo..hi (lo <= hi).
  Symbol same_length_range(const std::string& lo, const std::string& hi) {
    if (lo.empty()) return b_.empty();
    auto all = [](const std::string& x, char c) { return std::all_of(x.begin(), x.end(), [&](char y) { return y == c; }); };
    Symbol digit = b_.bytes(ByteSet::range('0', '9'));
    if (lo[0] == hi[0]) return b_.wrap("digits", {b_.byte(uint8_t(lo[0])), same_length_range(lo.substr(1), hi.substr(1))});
    std::string lo_rest = lo.substr(1), hi_rest = hi.substr(1);
    std::vector<Sequence> alts;
    char first_full = lo[0], last_full = hi[0];
    if (!all(lo_rest, '0')) {
      alts.push_back({b_.byte(uint8_t(lo[0])), same_length_range(lo_rest, std::string(lo_rest.size(), '9'))});
      ++first_full;
    }
    if (!all(hi_rest, '9')) {
      alts.push_back({b_.byte(uint8_t(hi[0])), same_length_range(std::string(hi_rest.size(), '0'), hi_rest)});
      --last_full;
    }
    if (first_full <= last_full) {
      Sequence seq{b_.bytes(ByteSet::range(uint8_t(first_full), uint8_t(last_full)))};
      for (size_t i = 0; i < lo_rest.size(); ++i) seq.push_back(digit);
      alts.push_back(seq);
    }
    return b_.choice("digits", std::move(alts));
  }

  // Canonical non-negative integers in [lo, hi] (hi absent: unbounded).
  Symbol natural_range(int64_t lo, std::optional<int64_t> hi) {
    std::vector<Sequence> alts;
    std::string lo_s = std::to_string(lo);
    int64_t len_hi = hi ? int64_t(std::to_string(*hi).size()) : int64_t(lo_s.size());
    for (int64_t len = int64_t(lo_s.size()); len <= len_hi; ++len) {
      int64_t first = len == 1 ? 0 : static_cast<int64_t>(std::pow(10.0, double(len - 1)));
      int64_t last = static_cast<int64_t>(std::pow(10.0, double(len))) - 1;
      int64_t a = std::max(lo, first), z = hi ? std::min(*hi, last) : last;
      if (a > z) continue;
      alts.push_back({same_length_range(std::to_string(a), std::to_string(z))});
    }
    if (!hi) {
      // any longer number
      Sequence longer{b_.bytes(ByteSet::range('1', '9')), digits_rule(int64_t(lo_s.size()))};
      alts.push_back(longer);
    }
    return b_.choice("natural", std::move(alts));
  }

  // Canonical integers in [lo, hi] (absent: unbounded); "-0" excluded.
  Symbol integer_range(std::optional<int64_t> lo, std::optional<int64_t> hi) {
    if (lo && hi && *lo > *hi) return b_.nothing();
    std::vector<Sequence> alts;
    if (!hi || *hi >= 0) alts.push_back({natural_range(lo ? std::max<int64_t>(*lo, 0) : 0, hi)});
    if (!lo || *lo < 0) {
      int64_t mag_lo = hi && *hi < 0 ? -*hi : 1;
      std::optional<int64_t> mag_hi;
      if (lo) mag_hi = -*lo;
      alts.push_back({b_.byte('-'), natural_range(mag_lo, mag_hi)});
    }
    return b_.choice("integer-range", std::move(alts));
  }

  double bound(const Json& s, const char* k, const std::string& path) {
    const Json& v = s[k];
    if (!v.is_number()) invalid(k, path, "must be a number");
    double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > kMaxExactBound) unsupported(k, path, "bounds beyond ±1e15");
    return d;
  }

  Symbol number_rule(const Json& s, const std::string& path, bool integer_only) {
    std::optional<double> lo, hi;  // real bounds; exclusive ones tracked separately for whole numbers
    std::optional<int64_t> int_lo, int_hi;
    auto tighten_lo = [&](int64_t v) { int_lo = int_lo ? std::max(*int_lo, v) : v; };
    auto tighten_hi = [&](int64_t v) { int_hi = int_hi ? std::min(*int_hi, v) : v; };
    if (s.contains("minimum")) { double d = bound(s, "minimum", path); lo = lo ? std::max(*lo, d) : d; tighten_lo(int64_t(std::ceil(d))); }
    if (s.contains("exclusiveMinimum")) { double d = bound(s, "exclusiveMinimum", path); lo = lo ? std::max(*lo, d) : d; tighten_lo(int64_t(std::floor(d)) + 1); }
    if (s.contains("maximum")) { double d = bound(s, "maximum", path); hi = hi ? std::min(*hi, d) : d; tighten_hi(int64_t(std::floor(d))); }
    if (s.contains("exclusiveMaximum")) { double d = bound(s, "exclusiveMaximum", path); hi = hi ? std::min(*hi, d) : d; tighten_hi(int64_t(std::ceil(d)) - 1); }
    if (!lo && !hi) return integer_only ? generic_integer() : generic_number();
    Symbol whole = integer_range(int_lo, int_hi);
    if (integer_only) return whole;
    // Whole numbers may also be written with a zero fraction (2.0). Other values: x = ±(I + f), 0 < f < 1,
    // allowed when the open interval (I, I+1) (or its negative) lies inside [lo, hi].
    Symbol zero_fraction = b_.choice("zero-fraction", {{}, {b_.byte('.'), b_.repeat("zeros", {b_.byte('0')}, 1, -1)}});
    ByteSet d19 = ByteSet::range('1', '9');
    Symbol nonzero_fraction = b_.wrap("fraction", {b_.byte('.'), digits_rule(0), b_.bytes(d19)});
    std::vector<Sequence> alts{{whole, zero_fraction}};
    // positive: I in [ceil(lo), floor(hi) - 1], I >= 0
    {
      int64_t a = std::max<int64_t>(0, lo ? int64_t(std::ceil(*lo)) : 0);
      std::optional<int64_t> z;
      if (hi) z = int64_t(std::floor(*hi)) - 1;
      if (!z || *z >= a) alts.push_back({natural_range(a, z), nonzero_fraction});
    }
    // negative: I in [max(0, ceil(-hi)), floor(-lo) - 1]
    {
      int64_t a = std::max<int64_t>(0, hi ? int64_t(std::ceil(-*hi)) : 0);
      std::optional<int64_t> z;
      if (lo) z = int64_t(std::floor(-*lo)) - 1;
      if (!z || *z >= a) alts.push_back({b_.byte('-'), natural_range(a, z), nonzero_fraction});
    }
    return b_.choice("number-range", std::move(alts));
  }

  const Json& root_;
  JsonSchemaOptions options_;
  std::vector<std::string>* warnings_;
  GrammarBuilder b_;
  std::map<std::string, uint32_t> ref_rules_;
  std::map<std::pair<int64_t, int64_t>, Symbol> bounded_strings_;
  std::optional<Symbol> bounded_char_;
  std::optional<Symbol> ws_, generic_char_, generic_string_, generic_integer_, generic_number_, any_value_;
};

}  // namespace

Grammar compile_json_schema(std::string_view schema_json, const JsonSchemaOptions& options,
                            std::vector<std::string>* warnings) {
  Json root;
  try {
    // Depth is bounded while parsing so hostile nesting fails cleanly instead of exhausting the stack.
    root = Json::parse(schema_json, [](int depth, Json::parse_event_t, Json&) {
      if (depth > 10000) throw Error("json schema: nested deeper than 10000 levels");
      return true;
    });
  } catch (const Json::exception& e) {
    throw Error(std::string("json schema: not valid JSON: ") + e.what());
  }
  return SchemaCompiler(root, options, warnings).compile_root();
}

Grammar any_json_grammar(Whitespace whitespace) {
  static const Json empty = true;
  JsonSchemaOptions o;
  o.whitespace = whitespace;
  return SchemaCompiler(empty, o, nullptr).compile_any();
}

}  // namespace deepmoe::grammar
