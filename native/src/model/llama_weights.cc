// See llama_weights.h.
#include "model/llama_weights.h"

#include <stdexcept>

#include "core/safetensors.h"
#include "model/weight_loader.h"

namespace tg {
namespace {

class Planner {
 public:
  Planner(const std::string& dir, const WeightLoader& loader) : dir_(dir), loader_(loader) {}

  TensorRead Whole(const std::string& name, const std::vector<int64_t>& shape) const {
    Expect(name, shape);
    size_t count = 1;
    for (int64_t n : shape) count *= static_cast<size_t>(n);
    return TensorRead{name, TensorRead::Split::kWhole, 0, 0, count};
  }
  TensorRead Rows(const std::string& name, const std::vector<int64_t>& shape, int64_t begin, int64_t end) const {
    Expect(name, shape);
    return TensorRead{name, TensorRead::Split::kRows, begin, end, loader_.RowsCount(name, begin, end)};
  }
  TensorRead Cols(const std::string& name, const std::vector<int64_t>& shape, int64_t begin, int64_t end) const {
    Expect(name, shape);
    return TensorRead{name, TensorRead::Split::kCols, begin, end, loader_.ColsCount(name, begin, end)};
  }

 private:
  // Checks that `name` exists with `shape` (as the config implies).
  void Expect(const std::string& name, const std::vector<int64_t>& shape) const {
    if (!loader_.Has(name)) throw std::runtime_error("model dir " + dir_ + ": tensor \"" + name + "\" not found");
    auto actual = loader_.Shape(name);
    if (actual != shape) {
      throw std::runtime_error("model dir " + dir_ + ": tensor \"" + name + "\" has shape " + ShapeString(actual) +
                               ", config.json implies " + ShapeString(shape));
    }
  }
  std::string dir_;
  const WeightLoader& loader_;
};

}  // namespace

LlamaReads PlanLlamaReads(const WeightLoader& loader, const std::string& model_dir, const ModelConfig& c,
                          const TpSlice& s) {
  Planner r(model_dir, loader);
  const int64_t hidden = c.hidden_size, d = c.head_dim;
  LlamaReads plan;
  plan.embed = r.Rows("model.embed_tokens.weight", {c.vocab_size, hidden}, s.vocab_begin, s.vocab_begin + s.vocab_size);
  plan.layers.resize(static_cast<size_t>(c.num_layers));
  const int64_t q0 = s.q_head_begin * d, q1 = (s.q_head_begin + s.q_heads) * d;
  const int64_t kv0 = s.kv_head_begin * d, kv1 = (s.kv_head_begin + s.kv_heads) * d;
  const int64_t i0 = s.inter_begin, i1 = s.inter_begin + s.inter_size;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto& L = plan.layers[static_cast<size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.input_norm = r.Whole(p + "input_layernorm.weight", {hidden});
    L.q = r.Rows(p + "self_attn.q_proj.weight", {c.num_heads * d, hidden}, q0, q1);
    L.k = r.Rows(p + "self_attn.k_proj.weight", {c.num_kv_heads * d, hidden}, kv0, kv1);
    L.v = r.Rows(p + "self_attn.v_proj.weight", {c.num_kv_heads * d, hidden}, kv0, kv1);
    if (c.attention_bias) {
      L.q_bias = r.Rows(p + "self_attn.q_proj.bias", {c.num_heads * d}, q0, q1);
      L.k_bias = r.Rows(p + "self_attn.k_proj.bias", {c.num_kv_heads * d}, kv0, kv1);
      L.v_bias = r.Rows(p + "self_attn.v_proj.bias", {c.num_kv_heads * d}, kv0, kv1);
    }
    L.o = r.Cols(p + "self_attn.o_proj.weight", {hidden, c.num_heads * d}, q0, q1);
    L.post_norm = r.Whole(p + "post_attention_layernorm.weight", {hidden});
    L.gate = r.Rows(p + "mlp.gate_proj.weight", {c.intermediate_size, hidden}, i0, i1);
    L.up = r.Rows(p + "mlp.up_proj.weight", {c.intermediate_size, hidden}, i0, i1);
    L.down = r.Cols(p + "mlp.down_proj.weight", {hidden, c.intermediate_size}, i0, i1);
  }
  plan.final_norm = r.Whole("model.norm.weight", {hidden});
  // Tied embeddings: use lm_head.weight when the file has it anyway, else share embed_tokens.
  if (loader.Has("lm_head.weight")) {
    plan.lm_head = r.Rows("lm_head.weight", {c.vocab_size, hidden}, s.vocab_begin, s.vocab_begin + s.vocab_size);
  } else if (!c.tie_word_embeddings) {
    throw std::runtime_error("model dir " + model_dir +
                             ": tensor \"lm_head.weight\" not found and tie_word_embeddings is false");
  }
  return plan;
}

void ReadTensor(const WeightLoader& loader, const TensorRead& read, DType to, void* dst) {
  switch (read.split) {
    case TensorRead::Split::kWhole:
      loader.ReadInto(read.name, to, dst);
      return;
    case TensorRead::Split::kRows:
      loader.ReadRowsInto(read.name, read.begin, read.end, to, dst);
      return;
    case TensorRead::Split::kCols:
      loader.ReadColsInto(read.name, read.begin, read.end, to, dst);
      return;
  }
}

LlamaWeights LoadLlamaWeights(const std::string& model_dir, const ModelConfig& c, const TpSlice& s) {
  WeightLoader loader(model_dir);
  const LlamaReads plan = PlanLlamaReads(loader, model_dir, c, s);
  LlamaWeights w;
  auto read = [&](const TensorRead& t) {
    std::vector<float> v;
    if (!t.present()) return v;
    v.resize(t.count);
    ReadTensor(loader, t, DType::kF32, v.data());
    w.bytes += static_cast<int64_t>(v.size() * sizeof(float));
    return v;
  };
  w.embed = read(plan.embed);
  for (const LlamaLayerReads& p : plan.layers) {
    LlamaLayerWeights L;
    L.input_norm = read(p.input_norm);
    L.q = read(p.q);
    L.k = read(p.k);
    L.v = read(p.v);
    L.q_bias = read(p.q_bias);
    L.k_bias = read(p.k_bias);
    L.v_bias = read(p.v_bias);
    L.o = read(p.o);
    L.post_norm = read(p.post_norm);
    L.gate = read(p.gate);
    L.up = read(p.up);
    L.down = read(p.down);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = read(plan.final_norm);
  w.lm_head = read(plan.lm_head);
  return w;
}

}  // namespace tg
