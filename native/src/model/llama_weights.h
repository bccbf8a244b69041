// One rank's weights of a Llama-family model (llama, mistral, qwen2): which
// tensors it reads by their Hugging Face names and which slice of each (the
// plan, shared by both backends), and the float32 copy the CPU backend computes on.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/model_config.h"
#include "model/tensor_parallel.h"

namespace tg {

class WeightLoader;

// How one rank reads one tensor: whole, a range of rows (the column-parallel split
// of an [out, in] weight, or the vocab split) or a range of columns (row-parallel).
struct TensorRead {
  enum class Split { kWhole, kRows, kCols };
  std::string name;  // empty: not read (no bias; lm_head tied to the embedding)
  Split split = Split::kWhole;
  int64_t begin = 0, end = 0;
  size_t count = 0;  // elements this rank gets
  bool present() const { return !name.empty(); }
};

struct LlamaLayerReads {
  TensorRead input_norm, q, k, v, q_bias, k_bias, v_bias, o, post_norm, gate, up, down;
};

struct LlamaReads {
  TensorRead embed;  // [slice.vocab_size, hidden], rows past the vocabulary zero
  std::vector<LlamaLayerReads> layers;
  TensorRead final_norm;
  TensorRead lm_head;  // absent when tied to `embed`
};

// Checks that every tensor the config implies exists with its shape, and returns what
// `slice` reads. Throws std::runtime_error naming the directory and tensor otherwise.
LlamaReads PlanLlamaReads(const WeightLoader& loader, const std::string& model_dir, const ModelConfig& config,
                          const TpSlice& slice);

// Reads one planned tensor into `dst` (read.count elements) as `to` (F32, BF16 or F16).
void ReadTensor(const WeightLoader& loader, const TensorRead& read, DType to, void* dst);

struct LlamaLayerWeights {
  std::vector<float> input_norm;          // [hidden]
  std::vector<float> q, k, v;             // [heads * head_dim, hidden] (this rank's heads)
  std::vector<float> q_bias, k_bias, v_bias;  // empty unless attention_bias
  std::vector<float> o;                   // [hidden, q_heads * head_dim] (this rank's input columns)
  std::vector<float> post_norm;           // [hidden]
  std::vector<float> gate, up;            // [inter, hidden]
  std::vector<float> down;                // [hidden, inter]
};

struct LlamaWeights {
  std::vector<float> embed;    // [slice.vocab_size, hidden], rows past the vocabulary zero
  std::vector<LlamaLayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;  // [slice.vocab_size, hidden]; empty when tied to `embed`
  const float* lm_head_data() const { return lm_head.empty() ? embed.data() : lm_head.data(); }
  int64_t bytes = 0;           // total float32 bytes held
};

// Reads the weights of `model_dir` for `slice` as float32.
LlamaWeights LoadLlamaWeights(const std::string& model_dir, const ModelConfig& config, const TpSlice& slice);

}  // namespace tg
