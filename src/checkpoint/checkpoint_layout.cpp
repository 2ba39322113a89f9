#include "checkpoint/checkpoint_layout.h"

#include "model/config.h"

namespace deepmoe {

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

uint64_t TensorSpec::nbytes() const { return uint64_t(numel()) * dtype_size_bytes(dtype); }

namespace {

class LayoutBuilder {
 public:
  LayoutBuilder(const ModelConfig& c, bool fp8) : c_(c), fp8_(fp8) {}

  std::vector<TensorSpec> build() {
    const int64_t H = c_.hidden_size;
    add("model.embed_tokens.weight", DType::BF16, {c_.vocab_size, H}, TensorRole::Embedding);
    for (int64_t layer = 0; layer < c_.num_hidden_layers; ++layer) add_decoder_layer(layer);
    add("model.norm.weight", DType::BF16, {H}, TensorRole::Norm);
    if (!c_.tie_word_embeddings) add("lm_head.weight", DType::BF16, {c_.vocab_size, H}, TensorRole::LmHead);

    // MTP modules (README_WEIGHTS.md): layer ids num_hidden_layers .. num_hidden_layers + nextn - 1, each with a
    // stored copy of the shared embedding and output head.
    for (int64_t k = 0; k < c_.num_nextn_predict_layers; ++k) {
      const int64_t layer = c_.num_hidden_layers + k;
      const std::string p = "model.layers." + std::to_string(layer) + ".";
      mtp_ = true;
      add_shared_copy(p + "embed_tokens.weight", "model.embed_tokens.weight", TensorRole::Embedding, layer);
      add(p + "enorm.weight", DType::BF16, {H}, TensorRole::Norm, layer);
      add(p + "hnorm.weight", DType::BF16, {H}, TensorRole::Norm, layer);
      add(p + "eh_proj.weight", DType::BF16, {H, 2 * H}, TensorRole::EhProj, layer);
      add_decoder_layer(layer);
      add(p + "shared_head.norm.weight", DType::BF16, {H}, TensorRole::Norm, layer);
      add_shared_copy(p + "shared_head.head.weight",
                      c_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", TensorRole::LmHead,
                      layer);
      mtp_ = false;
    }
    return std::move(out_);
  }

 private:
  void add(std::string name, DType dtype, std::vector<int64_t> shape, TensorRole role, int64_t layer = -1,
           int64_t expert = -1) {
    TensorSpec t;
    t.value_source = name;
    t.name = std::move(name);
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.role = role;
    t.layer = layer;
    t.expert = expert;
    t.mtp = mtp_;
    out_.push_back(std::move(t));
  }

  void add_shared_copy(const std::string& name, const std::string& source, TensorRole role, int64_t layer) {
    add(name, DType::BF16, {c_.vocab_size, c_.hidden_size}, role, layer);
    out_.back().shared_copy = true;
    out_.back().value_source = source;
  }

  // A projection: F8_E4M3 + weight_scale_inv in an FP8 checkpoint, BF16 otherwise.
  void add_linear(const std::string& prefix, int64_t out_features, int64_t in_features, int64_t layer,
                  int64_t expert = -1) {
    add(prefix + ".weight", fp8_ ? DType::F8_E4M3 : DType::BF16, {out_features, in_features}, TensorRole::Linear,
        layer, expert);
    if (fp8_)
      add(prefix + ".weight_scale_inv", DType::F32, block_scale_shape(out_features, in_features),
          TensorRole::ScaleInv, layer, expert);
  }

  void add_mlp(const std::string& prefix, int64_t hidden, int64_t inter, int64_t layer, int64_t expert = -1) {
    add_linear(prefix + ".gate_proj", inter, hidden, layer, expert);
    add_linear(prefix + ".up_proj", inter, hidden, layer, expert);
    add_linear(prefix + ".down_proj", hidden, inter, layer, expert);
  }

  void add_decoder_layer(int64_t layer) {
    const int64_t H = c_.hidden_size;
    const int64_t heads = c_.num_attention_heads;
    const int64_t qk_head = c_.qk_nope_head_dim + c_.qk_rope_head_dim;
    const std::string p = "model.layers." + std::to_string(layer) + ".";

    add(p + "input_layernorm.weight", DType::BF16, {H}, TensorRole::Norm, layer);
    // MLA (§1.5): q through a LoRA pair when q_lora_rank > 0 (V3), else one q_proj (V2-Lite).
    if (c_.q_lora_rank > 0) {
      add_linear(p + "self_attn.q_a_proj", c_.q_lora_rank, H, layer);
      add(p + "self_attn.q_a_layernorm.weight", DType::BF16, {c_.q_lora_rank}, TensorRole::Norm, layer);
      add_linear(p + "self_attn.q_b_proj", heads * qk_head, c_.q_lora_rank, layer);
    } else {
      add_linear(p + "self_attn.q_proj", heads * qk_head, H, layer);
    }
    add_linear(p + "self_attn.kv_a_proj_with_mqa", c_.kv_lora_rank + c_.qk_rope_head_dim, H, layer);
    add(p + "self_attn.kv_a_layernorm.weight", DType::BF16, {c_.kv_lora_rank}, TensorRole::Norm, layer);
    add_linear(p + "self_attn.kv_b_proj", heads * (c_.qk_nope_head_dim + c_.v_head_dim), c_.kv_lora_rank, layer);
    add_linear(p + "self_attn.o_proj", H, heads * c_.v_head_dim, layer);
    add(p + "post_attention_layernorm.weight", DType::BF16, {H}, TensorRole::Norm, layer);

    if (!c_.is_moe_layer(layer)) {
      add_mlp(p + "mlp", H, c_.intermediate_size, layer);
      return;
    }
    add(p + "mlp.gate.weight", DType::BF16, {c_.n_routed_experts, H}, TensorRole::GateWeight, layer);
    if (c_.topk_method == "noaux_tc")
      add(p + "mlp.gate.e_score_correction_bias", DType::F32, {c_.n_routed_experts}, TensorRole::CorrectionBias,
          layer);
    for (int64_t e = 0; e < c_.n_routed_experts; ++e)
      add_mlp(p + "mlp.experts." + std::to_string(e), H, c_.moe_intermediate_size, layer, e);
    if (c_.n_shared_experts > 0)
      add_mlp(p + "mlp.shared_experts", H, c_.n_shared_experts * c_.moe_intermediate_size, layer);
  }

  const ModelConfig& c_;
  bool fp8_;
  bool mtp_ = false;
  std::vector<TensorSpec> out_;
};

}  // namespace

std::vector<TensorSpec> checkpoint_layout(const ModelConfig& config, bool fp8) {
  return LayoutBuilder(config, fp8).build();
}

}  // namespace deepmoe
