// One rank's float32 weights of a Llama-family model (llama, mistral, qwen2),
// read by their Hugging Face names and sliced for tensor parallelism.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/tensor_parallel.h"

namespace tg {

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

// Reads the weights of `model_dir` for `slice`. Throws std::runtime_error naming the
// directory and tensor when one is missing or has the wrong shape.
LlamaWeights LoadLlamaWeights(const std::string& model_dir, const ModelConfig& config, const TpSlice& slice);

}  // namespace tg
