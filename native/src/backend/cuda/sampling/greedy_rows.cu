// The two passes of greedy_rows.h.
#include "backend/cuda/sampling/greedy_rows.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/per_device.h"

namespace tg {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kVecs = kGreedyChunk / (kThreads * 4);  // float4 loads per thread
constexpr int kPerThread = kVecs * 4;
static_assert(kGreedyChunk % (kThreads * 4) == 0, "a chunk is whole float4 rounds of the block");
constexpr int32_t kNone = 0x7fffffff;  // the id of "nothing", after every real id in the rank order
constexpr float kLog2e = 1.4426950408889634f;

// One chunk's record, in floats: [0] its largest value, [1] that value's lowest id (int
// bits; kNone when the chunk holds no id), [2] the sum of exp(x - [0]) over the chunk,
// then top_stride ids (int bits; -1 past the row's top-n) and their top_stride values.
__host__ __device__ constexpr int RecordFloats(int top_stride) { return 3 + 2 * top_stride; }

int32_t ChunksOf(int32_t cols) { return (cols + kGreedyChunk - 1) / kGreedyChunk; }

struct Pick {
  float value;
  int32_t id;
};
// The rank order of the argmax and of top-n: the larger value first, then the lower id.
__device__ __forceinline__ bool Before(Pick a, Pick b) { return a.value > b.value || (a.value == b.value && a.id < b.id); }
__device__ __forceinline__ Pick NoPick() { return {-INFINITY, kNone}; }

// The block's first pick in the rank order; every thread gets it.
__device__ Pick BlockFirst(Pick p, Pick* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const Pick q{__shfl_xor_sync(0xffffffffu, p.value, o), __shfl_xor_sync(0xffffffffu, p.id, o)};
    if (Before(q, p)) p = q;
  }
  __syncthreads();  // the scratch may still be read by the reduction before
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = p;
  __syncthreads();
  p = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) {
    if (Before(scratch[w], p)) p = scratch[w];
  }
  return p;
}

// The block's sum, added in one fixed order, so every thread and every run gets the same bits.
__device__ float BlockSum(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  float sum = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) sum += scratch[w];
  return sum;
}

// The row's top-n count, as the sampling kernel clips it.
__device__ __forceinline__ int32_t TopN(const GpuSamplingRow& row, int32_t vocab, int32_t top_stride) {
  return min(min(max(row.top_n, 0), vocab), min(top_stride, kMaxTopN));
}

struct PartialsArgs {
  const float* logits;
  int32_t cols, chunks, items;  // items: rows · chunks, item w is chunk w % chunks of row w / chunks
  int32_t id_offset, id_limit, top_stride;
  bool vector_loads;
  const GpuSamplingRow* sample_rows;
  float* partials;
};

// This thread's ids of a chunk: kVecs runs of 4, a block-wide float4 round apart, all loads
// issued before any is used. NaN counts as -inf; a padding column gets no id (kNone).
struct ChunkSlice {
  float x[kPerThread];
  int32_t col[kVecs];  // the column of each run's first element
  int32_t real_cols, id_offset;
  __device__ int32_t Id(int e) const {
    const int32_t c = col[e / 4] + e % 4;
    return c < real_cols ? id_offset + c : kNone;
  }
};

__device__ __forceinline__ void LoadSlice(const PartialsArgs& a, int32_t row, int32_t chunk, ChunkSlice& s) {
  const float* src = a.logits + static_cast<int64_t>(row) * a.cols;
  s.real_cols = min(a.cols, a.id_limit - a.id_offset);  // the columns past it pad the shard
  s.id_offset = a.id_offset;
#pragma unroll
  for (int v = 0; v < kVecs; ++v) {
    const int32_t c0 = chunk * kGreedyChunk + (v * kThreads + static_cast<int32_t>(threadIdx.x)) * 4;
    s.col[v] = c0;
    if (a.vector_loads && c0 + 4 <= s.real_cols) {
      const float4 f = *reinterpret_cast<const float4*>(src + c0);
      s.x[4 * v] = f.x, s.x[4 * v + 1] = f.y, s.x[4 * v + 2] = f.z, s.x[4 * v + 3] = f.w;
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) s.x[4 * v + e] = c0 + e < s.real_cols ? src[c0 + e] : -INFINITY;
    }
  }
#pragma unroll
  for (int e = 0; e < kPerThread; ++e) s.x[e] = isnan(s.x[e]) ? -INFINITY : s.x[e];
}

// The record of one chunk (RecordFloats) from the block's slices of it.
__device__ void WriteRecord(const PartialsArgs& a, int32_t item, const ChunkSlice& s, int32_t top_n,
                            Pick* pick_scratch, float* sum_scratch) {
  // This thread's largest value and its lowest id (ids rise with e), and its exp-sum
  // relative to it, kept as the largest value moves.
  Pick mine = NoPick();
  float mass = 0.0f;
#pragma unroll
  for (int e = 0; e < kPerThread; ++e) {
    const float x = s.x[e];
    if (x > mine.value) {
      mass = mass * exp2f((mine.value - x) * kLog2e) + 1.0f;
      mine = {x, s.Id(e)};
    } else if (x > -INFINITY) {
      mass += exp2f((x - mine.value) * kLog2e);
    } else if (mine.id == kNone) {
      mine.id = s.Id(e);  // -inf so far: the lowest real id still comes first
    }
  }
  const Pick best = BlockFirst(mine, pick_scratch);
  const bool counts = mine.value > -INFINITY && best.value < INFINITY;
  const float sum = BlockSum(counts ? mass * exp2f((mine.value - best.value) * kLog2e) : 0.0f, sum_scratch);

  float* record = a.partials + static_cast<int64_t>(item) * RecordFloats(a.top_stride);
  if (threadIdx.x == 0) {
    record[0] = best.value;
    record[1] = __int_as_float(best.id);
    record[2] = sum;
  }
  // The chunk's top-n, one block-wide pick per place: each after the one before in the rank order.
  Pick previous = best;
  for (int32_t k = 0; k < a.top_stride; ++k) {
    Pick got = NoPick();
    if (k == 0) {
      got = top_n > 0 ? best : NoPick();
    } else if (k < top_n) {  // the row's, the same in every thread
      Pick next = NoPick();
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const Pick p{s.x[e], s.Id(e)};
        if (Before(previous, p) && Before(p, next)) next = p;
      }
      got = BlockFirst(next, pick_scratch);
    }
    previous = got;
    if (threadIdx.x == 0) {
      record[3 + k] = __int_as_float(got.id == kNone ? -1 : got.id);
      record[3 + a.top_stride + k] = got.value;
    }
  }
}

// Each block takes items blockIdx.x, + gridDim.x, ...: the grid is what is resident at once.
__global__ void __launch_bounds__(kThreads) GreedyPartialsKernel(PartialsArgs a) {
  __shared__ Pick pick_scratch[kWarps];
  __shared__ float sum_scratch[kWarps];
  for (int32_t item = blockIdx.x; item < a.items; item += gridDim.x) {
    const int32_t row = item / a.chunks;
    const int32_t top_n = TopN(a.sample_rows[row], a.id_limit, a.top_stride);
    ChunkSlice slice;
    LoadSlice(a, row, item % a.chunks, slice);
    WriteRecord(a, item, slice, top_n, pick_scratch, sum_scratch);
  }
}

__global__ void __launch_bounds__(kThreads) GreedyMergeKernel(const float* __restrict__ partials, int32_t parts,
                                                              int64_t part_floats, int32_t chunks, int32_t vocab,
                                                              const GpuSamplingRow* __restrict__ sample_rows,
                                                              int32_t top_stride, GpuSamplingOutputs out) {
  __shared__ Pick pick_scratch[kWarps];
  __shared__ float sum_scratch[kWarps];
  const int32_t row = blockIdx.x;
  const int32_t records = parts * chunks;
  auto record = [&](int32_t j) {
    return partials + (j / chunks) * part_floats +
           (static_cast<int64_t>(row) * chunks + j % chunks) * RecordFloats(top_stride);
  };

  Pick mine = NoPick();
  for (int32_t j = threadIdx.x; j < records; j += kThreads) {
    const float* r = record(j);
    const Pick p{r[0], __float_as_int(r[1])};
    if (Before(p, mine)) mine = p;
  }
  const Pick best = BlockFirst(mine, pick_scratch);
  float mass = 0.0f;
  if (isfinite(best.value)) {
    for (int32_t j = threadIdx.x; j < records; j += kThreads) {
      const float* r = record(j);
      if (r[0] > -INFINITY) mass += r[2] * expf(r[0] - best.value);
    }
  }
  const float sum = BlockSum(mass, sum_scratch);

  const int32_t n = TopN(sample_rows[row], vocab, out.top_stride);
  int32_t* top_ids = out.top_ids + static_cast<int64_t>(row) * out.top_stride;
  float* top_logprobs = out.top_logprobs + static_cast<int64_t>(row) * out.top_stride;
  for (int32_t i = n + threadIdx.x; i < out.top_stride; i += kThreads) top_ids[i] = -1, top_logprobs[i] = -INFINITY;
  if (!isfinite(best.value)) {  // the sampling kernel's answer for a row with no finite logit
    if (threadIdx.x == 0) out.tokens[row] = -1, out.logprobs[row] = NAN;
    for (int32_t i = threadIdx.x; i < n; i += kThreads) top_ids[i] = -1, top_logprobs[i] = NAN;
    return;
  }
  const double log_sum = log(static_cast<double>(sum));
  auto logprob = [&](float x) { return static_cast<float>(static_cast<double>(x) - best.value - log_sum); };
  if (threadIdx.x == 0) out.tokens[row] = best.id, out.logprobs[row] = logprob(best.value);

  // Top-n from the chunks' own: the k-th of the row is among the first k of its chunk.
  Pick previous = best;
  for (int32_t k = 0; k < n; ++k) {
    Pick got = best;
    if (k > 0) {
      Pick next = NoPick();
      for (int32_t u = threadIdx.x; u < records * top_stride; u += kThreads) {
        const float* r = record(u / top_stride);
        const int32_t at = u % top_stride, id = __float_as_int(r[3 + at]);
        const Pick p{r[3 + top_stride + at], id};
        if (id >= 0 && Before(previous, p) && Before(p, next)) next = p;
      }
      got = BlockFirst(next, pick_scratch);
    }
    previous = got;
    if (threadIdx.x == 0) {
      top_ids[k] = got.id == kNone ? -1 : got.id;
      top_logprobs[k] = got.id == kNone ? -INFINITY : logprob(got.value);
    }
  }
}

}  // namespace

size_t GreedyPartialFloats(int32_t rows, int32_t cols, int32_t top_stride) {
  const size_t floats = static_cast<size_t>(rows) * static_cast<size_t>(ChunksOf(cols)) * RecordFloats(top_stride);
  return (floats + 3) / 4 * 4;
}

void LaunchGreedyPartials(cudaStream_t stream, const float* logits, int32_t rows, int32_t cols, int32_t id_offset,
                          int32_t id_limit, const GpuSamplingRow* sample_rows, int32_t top_stride, float* partials) {
  if (rows <= 0) return;
  if (cols <= 0 || id_offset < 0 || id_limit <= 0) throw std::invalid_argument("greedy rows: empty row");
  if (top_stride < 0 || top_stride > kMaxTopN) throw std::invalid_argument("greedy rows: top_stride out of range");
  const int32_t chunks = ChunksOf(cols);
  if (static_cast<int64_t>(rows) * chunks > INT32_MAX) throw std::invalid_argument("greedy rows: too many chunks");
  const PartialsArgs args{logits,    cols,       chunks,
                          rows * chunks, id_offset, id_limit,
                          top_stride, cols % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0,
                          sample_rows, partials};
  // As many blocks as are resident at once (a block per item when there are fewer items).
  static PerDeviceCount resident_blocks;
  const int resident = resident_blocks.Get([](int device) {
    int per_sm = 0, sms = 0;
    TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, GreedyPartialsKernel, kThreads, 0));
    TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return std::max(per_sm * sms, 1);
  });
  const int32_t blocks = std::min<int64_t>(args.items, resident);
  GreedyPartialsKernel<<<blocks, kThreads, 0, stream>>>(args);
  TG_CUDA_CHECK_LAUNCH("GreedyPartialsKernel");
}

void LaunchGreedyMerge(cudaStream_t stream, const float* partials, int32_t parts, int32_t rows, int32_t cols,
                       int32_t vocab, const GpuSamplingRow* sample_rows, int32_t top_stride,
                       const GpuSamplingOutputs& out) {
  if (rows <= 0) return;
  if (parts <= 0 || cols <= 0 || vocab <= 0) throw std::invalid_argument("greedy rows: nothing to merge");
  if (out.top_stride != top_stride) throw std::invalid_argument("greedy rows: the outputs' top_stride must match");
  if (top_stride > 0 && (out.top_ids == nullptr || out.top_logprobs == nullptr)) {
    throw std::invalid_argument("greedy rows: top_stride > 0 needs top_ids and top_logprobs");
  }
  const int64_t part_floats = static_cast<int64_t>(GreedyPartialFloats(rows, cols, top_stride));
  GreedyMergeKernel<<<rows, kThreads, 0, stream>>>(partials, parts, part_floats, ChunksOf(cols), vocab, sample_rows,
                                                   top_stride, out);
  TG_CUDA_CHECK_LAUNCH("GreedyMergeKernel");
}

}  // namespace cuda
}  // namespace tg
