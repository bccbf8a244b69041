// Sampling on the GPU: the CPU sampler (sampling/sampler.h) over a batch of
// logits rows, one thread block per row, on a caller's stream, with no host
// synchronisation and no allocation per call. Greedy picks exactly the CPU's
// token; a seeded draw picks the CPU's token for the same (seed, generated
// index) except where float rounding moves a truncation or CDF boundary past
// the uniform (rare: exp and sum orders differ; bench/results/cuda-sampling.md
// has the measured rate); logprobs agree with the CPU's within 1e-4.
//
// Penalty state: one list of distinct (token, count) pairs per sequence slot,
// in device memory. Dense [slots, V] counts would be 128 MiB at 256 slots and
// V = 128256, and reading a V-wide row of counts per step would cost as much
// memory traffic as the logits themselves; a sequence has at most as many
// distinct tokens as it has tokens, so a list of `capacity` = the longest
// sequence (8 bytes a pair) is 16x smaller at 4k context, and a step reads
// only its filled part. The prompt's pairs are uploaded once (SetCounts); the sampling
// kernel appends the token it chose (GpuSamplingRow::observe), so decode needs
// no upload at all; ObserveTokens adds tokens chosen elsewhere (speculation).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "sampling/sampling_params.h"

namespace tg {
namespace cuda {

constexpr int32_t kMaxTopN = 20;

// One row's parameters, as a plain struct copied into a device array with the
// step's other inputs. Build it with MakeGpuSamplingRow.
struct GpuSamplingRow {
  float temperature;
  int32_t top_k;
  float top_p;
  float typical_p;
  float repetition_penalty;
  float frequency_penalty;
  float presence_penalty;
  uint64_t seed;
  uint64_t generated_index;  // tokens this sequence generated before: the draw's counter
  int32_t samples;           // SamplingParams::Samples(); 0 is greedy
  int32_t top_n;             // alternatives to report, 0..kMaxTopN
  int32_t penalty_slot;      // slot in GpuPenaltyState, or -1 (penalties then read no counts)
  int32_t observe;           // 1: add the chosen token to the slot's counts
};

// Whether a row's logits take a penalty (rewritten in place from the slot's counts, and the
// choice added to them): a slot, and a penalty that changes anything.
__host__ __device__ inline bool RowIsPenalised(const GpuSamplingRow& row) {
  return row.penalty_slot >= 0 &&
         (row.repetition_penalty != 1.0f || row.frequency_penalty != 0.0f || row.presence_penalty != 0.0f);
}

// Whether this sampler implements everything `params` and `top_n` ask for. The
// engine samples the other requests on the host (sampling/sampler.cc): top_n
// above kMaxTopN, and the SamplingParams features the CPU sampler has and this
// one does not yet: the watermark (its greenlist needs the previous token and a
// per-id hash pass, not written here). A feature added to SamplingParams must be
// refused here until the kernel mirrors it.
bool GpuSamplerSupports(const SamplingParams& params, int32_t top_n);

GpuSamplingRow MakeGpuSamplingRow(const SamplingParams& params, int64_t generated_index, int32_t top_n,
                                  int32_t penalty_slot, bool observe);

// The penalty counts of every sequence slot, as the kernels see them.
struct GpuPenaltyView {
  int2* pairs = nullptr;      // [slots][capacity] (token, count), the first sizes[slot] valid
  int32_t* sizes = nullptr;   // [slots]
  int32_t capacity = 0;
};

// Owns the device memory of the penalty lists. Tokens past `capacity`
// distinct ones in a slot are dropped, so capacity should be the longest
// sequence (prompt + generated) the engine admits.
class GpuPenaltyState {
 public:
  GpuPenaltyState(int32_t slots, int32_t capacity);
  ~GpuPenaltyState();
  GpuPenaltyState(const GpuPenaltyState&) = delete;
  GpuPenaltyState& operator=(const GpuPenaltyState&) = delete;

  GpuPenaltyView view() const { return view_; }
  int32_t slots() const { return slots_; }

  // Replaces a slot's counts with `pairs` (distinct tokens; CountTokens makes
  // them). `pairs` must stay valid until the copy on `stream` has run; pinned
  // memory makes the copy asynchronous.
  void SetCounts(int32_t slot, const int2* pairs, int32_t count, cudaStream_t stream);
  void Clear(int32_t slot, cudaStream_t stream);

  // For each r < rows: adds tokens[offsets[r] .. offsets[r+1]) to slot slots[r]
  // (device arrays; slots distinct). One block per row, tokens in turn: for a
  // few tokens per step, not for prompts.
  void ObserveTokens(const int32_t* slots, const int32_t* offsets, const int32_t* tokens, int32_t rows,
                     cudaStream_t stream);

 private:
  int32_t slots_;
  GpuPenaltyView view_;
};

// Distinct (token, count) pairs of a token sequence, for SetCounts.
std::vector<int2> CountTokens(const int32_t* tokens, int64_t count);

// Where the kernel writes. Device pointers; top arrays are [batch][top_stride]
// with top_stride >= every row's top_n; entries past a row's top_n get id -1.
struct GpuSamplingOutputs {
  int32_t* tokens = nullptr;        // [batch]; -1 where every logit is -inf or NaN
  float* logprobs = nullptr;        // [batch] log_softmax after penalties and temperature
  int32_t* top_ids = nullptr;       // may be null when top_stride is 0
  float* top_logprobs = nullptr;
  int32_t top_stride = 0;
};

// Samples every row of `logits` ([batch, vocab] f32, device). The logits are
// used in place: penalised rows are modified. Throws on a launch error.
void LaunchGpuSampling(cudaStream_t stream, float* logits, int32_t batch, int32_t vocab, const GpuSamplingRow* rows,
                       GpuPenaltyView penalties, const GpuSamplingOutputs& out);

}  // namespace cuda
}  // namespace tg
