// The forward pass of a Llama-family decoder (llama, mistral, qwen2) on the CPU,
// with Hugging Face semantics: RMSNorm, rotate_half RoPE, grouped-query
// attention over the paged KV cache, SwiGLU MLP, optional q/k/v biases and
// sliding window. Under tensor parallelism each rank runs its slice and the
// communicator sums partial outputs (after attention, after the MLP, at the
// embedding) and gathers the vocab-split logits.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/llama_weights.h"
#include "model/model_config.h"
#include "model/tensor_parallel.h"

namespace tg {

class Communicator;
class KvCache;
class ThreadPool;

// One sequence's tokens of a step: positions [position, position + count), whose
// K/V go into `blocks` (position p in blocks[p / block_size] at slot p % block_size).
struct ForwardSequence {
  const int32_t* tokens = nullptr;
  int64_t count = 0;
  int64_t position = 0;
  const int32_t* blocks = nullptr;
  int64_t num_blocks = 0;
};

class LlamaModel {
 public:
  // Loads this rank's weights. `comm` and `pool` must outlive the model.
  LlamaModel(const ModelConfig& config, const std::string& model_dir, Communicator& comm, ThreadPool& pool);

  const ModelConfig& config() const { return config_; }
  const TpSlice& slice() const { return slice_; }
  int64_t weight_bytes() const { return weights_.bytes; }

  // Runs one batched forward pass. Token ids, positions and blocks must already be
  // validated. `logit_rows` index the concatenation of all sequences' tokens;
  // `logits` receives [logit_rows.size(), vocab_size] float32. Collective: every rank
  // calls it with the same batch.
  void Forward(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows, KvCache& cache,
               std::vector<float>* logits);

 private:
  void Embed(const std::vector<int32_t>& tokens, float* x);
  void Attention(int64_t layer, const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& row_seq,
                 const std::vector<int64_t>& row_pos, const float* q, KvCache& cache, float* out);
  void Logits(const float* x, const std::vector<int64_t>& rows, std::vector<float>* logits);

  ModelConfig config_;
  TpSlice slice_;
  Communicator& comm_;
  ThreadPool& pool_;
  LlamaWeights weights_;
  std::vector<float> inv_freq_;  // for configs whose RoPE doesn't depend on length
};

}  // namespace tg
