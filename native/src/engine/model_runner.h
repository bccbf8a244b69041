// The forward pass of one rank behind one interface, so that Engine::Step runs
// the same validation, batching and sampling whichever device computes the
// logits: the CPU (LlamaModel over a host KV cache) or CUDA (CudaLlamaModel over
// a device KV cache). A runner owns its weights and its KV cache.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/llama_model.h"
#include "model/tensor_parallel.h"

namespace tg {

class Communicator;
struct EngineOptions;

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual const TpSlice& slice() const = 0;
  // Bytes the weights take where they are computed on (host or device).
  virtual int64_t weight_bytes() const = 0;
  // Bytes of KV cache one block of `block_size` tokens takes on this rank.
  virtual int64_t kv_bytes_per_block(int64_t block_size) const = 0;
  // Name reported as EngineInfo.attention_impl.
  virtual std::string attention_impl() const = 0;

  // Allocates `num_blocks` KV blocks (block 0 included), dropping any earlier cache.
  virtual void AllocateKvCache(int64_t num_blocks, int64_t block_size) = 0;
  // 0 until AllocateKvCache.
  virtual int64_t num_blocks() const = 0;

  // One batched forward over validated inputs; see LlamaModel::Forward for the
  // meaning of `seqs`, `logit_rows` and `logits` ([rows, vocab] float32 on the host).
  virtual void Forward(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                       std::vector<float>* logits) = 0;
};

// The runner for options.device: "cpu" always; "cuda" when this build has the
// CUDA backend and a GPU is visible. Throws std::runtime_error with a message for
// the user otherwise. `comm` must outlive the runner.
std::unique_ptr<ModelRunner> MakeModelRunner(const EngineOptions& options, Communicator& comm);

}  // namespace tg
