// Greedy rows spread over many blocks, and over the ranks' vocabulary shards.
//
// The sampling kernel (gpu_sampler.h) gives a row one block, so a batch of one uses one
// SM and takes ~77 µs on an H100 for a greedy pick of 128256 logits, most of a decode
// step's non-GEMV time. A greedy row needs only the largest value, its lowest id, the
// log-sum-exp of the row (its logprob) and maybe its top-n, and all of those merge from
// pieces. So this path cuts each row into chunks of kGreedyChunk ids:
//
//   LaunchGreedyPartials   per (chunk, row), streamed by the blocks resident at once: the
//                          chunk's largest value, its lowest id, the sum of exp(x - that
//                          value), and its top-n
//   LaunchGreedyMerge      one block per row: the pieces merged into the outputs
//                          LaunchGpuSampling writes for the same rows
//
// Under tensor parallelism each rank runs the first pass on its own vocabulary shard of
// the logits, the ranks all-gather the pieces (a few hundred bytes a row, where the
// logits are 4 bytes an id), and every rank merges them alike. So a greedy decode step
// moves no logits between GPUs.
//
// Agreement with LaunchGpuSampling: tokens and top-n ids bit-exact (larger value first,
// then the lower id; NaN counts as -inf; -1 where no logit is finite); logprobs within
// float rounding of its fixed-point sums (both within 1e-4 of the CPU's).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/sampling/gpu_sampler.h"

namespace tg {
namespace cuda {

// Ids per chunk of the first pass (a block's work item).
constexpr int32_t kGreedyChunk = 8192;

// Whether this path serves a row: greedy, and no penalty (a penalty rewrites the row and
// records the choice, which the sampling kernel does). Top-n up to kMaxTopN is served.
inline bool GreedyRowsServe(const GpuSamplingRow& row) {
  return row.samples == 0 && !RowIsPenalised(row) && row.top_n >= 0 && row.top_n <= kMaxTopN;
}

// Floats of the first pass's output for `rows` rows of `cols` logits with top-n records
// `top_stride` wide, padded to whole 16-byte vectors (what the peer all-gather moves).
size_t GreedyPartialFloats(int32_t rows, int32_t cols, int32_t top_stride);

// The first pass over `logits` ([rows][cols] f32, device). Column c holds id
// id_offset + c; ids at or past id_limit (a padded vocabulary shard) are left out.
// `sample_rows` gives each row's top_n (clipped to top_stride, at most kMaxTopN).
// Writes GreedyPartialFloats(rows, cols, top_stride) floats at `partials`.
void LaunchGreedyPartials(cudaStream_t stream, const float* logits, int32_t rows, int32_t cols, int32_t id_offset,
                          int32_t id_limit, const GpuSamplingRow* sample_rows, int32_t top_stride, float* partials);

// Merges `parts` first passes (each GreedyPartialFloats(rows, cols, top_stride) floats,
// back to back, as an all-gather of the ranks' passes lays them out) into `out`, as
// LaunchGpuSampling would fill it for these rows of a `vocab`-id row. `out.top_stride`
// must equal top_stride.
void LaunchGreedyMerge(cudaStream_t stream, const float* partials, int32_t parts, int32_t rows, int32_t cols,
                       int32_t vocab, const GpuSamplingRow* sample_rows, int32_t top_stride,
                       const GpuSamplingOutputs& out);

}  // namespace cuda
}  // namespace tg
