// One rank's Llama-family weights on the GPU: bf16/fp16 matrices (the QKV and the
// gate/up projections concatenated so each is one GEMM), f32 norms and biases.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/elem_type.h"
#include "model/model_config.h"
#include "model/tensor_parallel.h"

namespace tg {
namespace cuda {

struct CudaLayerWeights {
  DeviceBuffer input_norm, post_norm;  // f32 [hidden]
  DeviceBuffer qkv;                    // [(q_heads + 2 kv_heads) * d, hidden]
  DeviceBuffer qkv_bias;               // f32, empty unless attention_bias
  DeviceBuffer o;                      // [hidden, q_heads * d]
  DeviceBuffer gate_up;                // [2 * inter, hidden]: gate rows then up rows
  DeviceBuffer down;                   // [hidden, inter]
};

struct CudaWeights {
  DeviceBuffer embed;       // [slice.vocab_size, hidden]
  DeviceBuffer final_norm;  // f32 [hidden]
  DeviceBuffer lm_head;     // [slice.vocab_size, hidden]; empty when tied to embed
  std::vector<CudaLayerWeights> layers;
  int64_t bytes = 0;
  const void* head() const { return lm_head.bytes() ? lm_head.get() : embed.get(); }
};

// Reads `slice` of the checkpoint in `model_dir` straight into `type` (no float32
// copy of 16-bit weights) through a pinned staging buffer, tensor by tensor.
CudaWeights UploadLlamaWeights(const std::string& model_dir, const ModelConfig& config, const TpSlice& slice,
                               ElemType type);

}  // namespace cuda
}  // namespace tg
