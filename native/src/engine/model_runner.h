// The forward pass of one rank behind one interface, so that Engine::Step runs
// the same validation, batching and sampling whichever device computes the
// logits: the CPU (LlamaModel over a host KV cache) or CUDA (CudaLlamaModel over
// a device KV cache). A runner owns its weights and its KV cache, and may sample
// on its device the rows the engine sends there (ForwardAndSample).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/llama_model.h"
#include "model/tensor_parallel.h"
#include "sampling/sampler.h"
#include "sampling/sampling_params.h"

namespace tg {

class Communicator;
struct EngineOptions;

// One row a runner samples on its device (see ModelRunner::ForwardAndSample).
struct DeviceSample {
  SamplingParams params;
  int64_t generated_index = 0;  // tokens the sequence generated before: the draw's counter
  int32_t top_n = 0;
  // Slot of the sequence's penalty counts on the device, or -1 when it has no penalties.
  int32_t penalty_slot = -1;
  // When set, the slot's counts are replaced by the counts of these tokens (every
  // token of the sequence so far) before sampling: the slot's first use, or after
  // a step sampled on the host. Otherwise the slot already holds them, since the
  // device sampler adds the token it chooses.
  const std::vector<int32_t>* reset_counts = nullptr;
};

// Free and total memory of the device a runner computes on (0, 0 for the host).
struct DeviceMemory {
  int64_t free_bytes = 0, total_bytes = 0;
};

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
  // Decode batch sizes the shard's warm-up runs before serving (EngineInfo.warmup_batch_sizes):
  // where a size's first step tunes something or its second captures a CUDA graph. None here.
  virtual std::vector<int32_t> warmup_batch_sizes() const { return {}; }

  // Allocates `num_blocks` KV blocks (block 0 included), dropping any earlier cache.
  virtual void AllocateKvCache(int64_t num_blocks, int64_t block_size) = 0;
  // 0 until AllocateKvCache.
  virtual int64_t num_blocks() const = 0;

  // One batched forward over validated inputs; see LlamaModel::Forward for the
  // meaning of `seqs`, `logit_rows` and `logits` ([rows, vocab] float32 on the host).
  virtual void Forward(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                       std::vector<float>* logits) = 0;

  // Penalty slots of the device sampler; 0 when this runner has no device sampler.
  virtual int32_t device_penalty_slots() const { return 0; }
  // Whether the device sampler implements every feature `params` and `top_n` ask for.
  virtual bool CanSampleOnDevice(const SamplingParams& params, int32_t top_n) const {
    (void)params;
    (void)top_n;
    return false;
  }
  // Forward, then: the first `host_rows` of `logit_rows` come back as `logits`
  // ([host_rows, vocab]), and the rest (one per entry of `samples`, in order) are
  // sampled on the device, only tokens, logprobs and top-n coming back in `sampled`.
  // The default (no device sampler) accepts no samples.
  virtual void ForwardAndSample(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                                int64_t host_rows, const std::vector<DeviceSample>& samples,
                                std::vector<float>* logits, std::vector<SampleResult>* sampled);
  virtual DeviceMemory memory_info() const { return {}; }

  // Steps that overlap (Engine's decode ahead): a runner that computes asynchronously
  // may hold up to kStepSlots steps in flight, each in its own slot, and start a decode
  // step before the host knows the tokens it consumes.
  static constexpr int kStepSlots = 3;
  virtual bool runs_ahead() const { return false; }
  // ForwardAndSample in two halves: EnqueueStep queues the step on the device with its
  // results going to `slot` (which must not hold a step), FinishStep waits for the step
  // in `slot` and returns its results. A slot's steps finish in the order they were queued.
  virtual void EnqueueStep(int slot, const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                           int64_t host_rows, const std::vector<DeviceSample>& samples);
  virtual void FinishStep(int slot, std::vector<float>* logits, std::vector<SampleResult>* sampled);
  // Queues, into `slot`, a decode step of `seqs` (one token each, every row sampled on
  // the device by `samples`) whose token i is the one that the step queued last sampled
  // in its sample row seqs[i].tokens[0]: the tokens arrays hold those sample rows, not
  // tokens. False, with nothing queued, when the runner can't run this step ahead.
  virtual bool EnqueueDecodeAhead(int slot, const std::vector<ForwardSequence>& seqs,
                                  const std::vector<DeviceSample>& samples);
};

// The runner for options.device: "cpu" always; "cuda" when this build has the
// CUDA backend and a GPU is visible. Throws std::runtime_error with a message for
// the user otherwise. `comm` must outlive the runner.
std::unique_ptr<ModelRunner> MakeModelRunner(const EngineOptions& options, Communicator& comm);

}  // namespace tg
