// The engine of one rank: the model runner (weights and paged KV cache on the
// CPU or a GPU), the tensor-parallel communicator and each sequence's sampler
// state. Step() runs one batched forward for a mix of prefill chunks and decode
// tokens, then samples the sequences that asked for it: on the device when the
// runner has a device sampler that covers the request (CUDA), else on the host
// (SequenceSampler, which every sequence keeps current). Plain C++ types only; the Node-API
// layer (addon/) copies JS values into these structs before a step is queued.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/model_config.h"
#include "sampling/sampling_params.h"

namespace tg {

class Communicator;
class ModelRunner;
class SequenceSampler;
struct SampleResult;

struct EngineOptions {
  std::string model_dir;
  ModelConfig config;
  // The CPU backend computes in float32 whatever this is; CUDA keeps weights,
  // activations and KV in "bfloat16" or "float16" and rejects "float32".
  std::string dtype = "float32";
  std::string device = "cpu";  // "cpu" or "cuda" (one GPU per rank; NCCL between ranks)
  int rank = 0;
  int world_size = 1;
  std::string comm_name;  // shared-memory name, needed when world_size > 1
  // The raw 128 bytes of rank 0's ncclUniqueId, the same on every rank: needed
  // for device "cuda" with world_size > 1 (the model joins the NCCL group with it).
  std::string nccl_id;
  int comm_timeout_ms = 60000;
  int64_t block_size = 16;
  int threads = 0;  // 0: one per core
  // Batch sizes whose decode steps run as CUDA graphs (TGI's --cuda-graphs):
  // unset, the backend's default buckets; empty, none.
  std::optional<std::vector<int32_t>> cuda_graphs;
};

struct EngineInfo {
  std::string device, dtype, attention_impl;
  int64_t block_size = 0, kv_bytes_per_block = 0, weight_bytes = 0, num_blocks = 0;
  std::vector<int32_t> warmup_batch_sizes;  // ModelRunner's: decode sizes the warm-up runs
};

// Memory of the device the engine computes on (zeros on the CPU).
struct EngineMemoryInfo {
  int64_t free_bytes = 0, total_bytes = 0;
};

struct StepInit {
  SamplingParams params;
  std::vector<int32_t> prefix;  // tokens already in KV (prefix-cache hit)
};

// One sequence's share of a step; see StepSequence in native/engine-types.ts.
struct StepInput {
  int64_t id = 0;
  std::vector<int32_t> tokens;
  int64_t position = 0;
  std::vector<int32_t> blocks;
  bool sample = false;
  int32_t top_n = 0;
  bool prompt_logprobs = false;
  std::optional<StepInit> init;
};

struct StepResult {
  int64_t id = 0;
  bool sampled = false;
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
  bool has_prompt_logprobs = false;
  std::vector<float> prompt_logprobs;  // NaN where no earlier token is known
};

class Engine {
 public:
  // Creates the communicator (ranks rendezvous here) and loads the weights.
  // Throws std::runtime_error with a message fit for the user.
  explicit Engine(const EngineOptions& options);
  // The same over a runner made by the caller (tests drive the engine with a fake one);
  // null makes the runner for options.device, as the constructor above does.
  Engine(const EngineOptions& options, std::unique_ptr<ModelRunner> runner);
  ~Engine();

  EngineInfo Info() const;
  // Free and total device memory now (for KV sizing after a warm-up step).
  EngineMemoryInfo MemoryInfo() const;
  // Allocates `num_blocks` KV blocks (block 0 included), dropping any earlier cache.
  void AllocateKvCache(int64_t num_blocks);
  // One batched forward and sampling; outputs in the order of `inputs`. Validates
  // everything before touching state, so a rejected step changes nothing.
  //
  // With `ahead`, when every sequence of the step samples on the device and has the KV
  // block for one more token, the runner is also handed the next decode step of these
  // sequences before this one's results are waited for, fed on the device with the
  // tokens this step samples: the device computes it while the caller turns this step's
  // tokens around. A later step that asks for exactly that (a sequence, its sampled token
  // at the next position, the same blocks and top-n) takes its result from there. What
  // no step asks for is dropped: a stopped sequence's extra token, and its KV write past
  // its end, which nothing reads. Sequences with penalties (host counts) never run ahead.
  std::vector<StepResult> Step(const std::vector<StepInput>& inputs, bool ahead = false);
  // Forgets the sampler state of these sequences (unknown ids are ignored).
  void Release(const std::vector<int64_t>& ids);

 private:
  struct Sequence;

  struct AheadRow;

  void Validate(const std::vector<StepInput>& inputs) const;
  // Step's parts: sequences computed now; results taken from steps run ahead; the next
  // step started ahead; the step in flight waited for and its results kept.
  void RunStep(const std::vector<StepInput>& inputs, bool ahead, std::vector<StepResult>* results);
  void StepInFlight(const std::vector<StepInput>& inputs, bool ahead, std::vector<StepResult>* results);
  void StepPartlyAhead(const std::vector<StepInput>& inputs, const std::vector<char>& hit, bool ahead,
                       std::vector<StepResult>* results);
  bool AheadHit(const StepInput& in) const;
  void TakeAheadResult(const StepInput& in, StepResult* out);
  // Starts the next decode step of `inputs` in runner slot `slot` (1 or 2: 0 is RunStep's),
  // input i fed by sample row source_rows[i] of the step queued last, its rows into `rows`;
  // false, with nothing started, if it can't.
  bool StartAhead(int slot, const std::vector<StepInput>& inputs, const std::vector<std::shared_ptr<Sequence>>& states,
                  const std::vector<int64_t>& source_rows, std::unordered_map<int64_t, AheadRow>* rows);
  void FinishAhead();
  void KeepAheadResults(const std::vector<int64_t>& order, std::vector<SampleResult>* sampled);
  void DropStaleAhead();

  EngineOptions options_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<ModelRunner> runner_;
  std::mutex step_mu_;  // one step (or KV reallocation) at a time
  mutable std::mutex seq_mu_;  // guards sequences_ (Release may come from another thread)
  std::unordered_map<int64_t, std::shared_ptr<Sequence>> sequences_;
  // Device penalty slots not held by a sequence (guarded by seq_mu_).
  std::vector<int32_t> free_penalty_slots_;
  // Decode steps run ahead, by sequence id (guarded by step_mu_): rows of the step in
  // flight (in slot ahead_slot_, in ahead_order_), and rows whose results came back
  // but no step has asked for yet.
  std::unordered_map<int64_t, AheadRow> ahead_rows_;
  int ahead_slot_ = -1;
  std::vector<int64_t> ahead_order_;
};

}  // namespace tg
