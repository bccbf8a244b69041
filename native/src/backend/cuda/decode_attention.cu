// Paged attention for decode rows and short prefill chunks on tensor cores: the path
// LaunchPagedAttention (paged_attention.cu) takes for head_dim 64 and 128.
//
// A work item's up to 16 queries (consecutive (row, head-in-group) pairs of one
// sequence sharing a KV head, kernels.h) are exactly the 16 rows of an mma.m16n8k16
// tile, so one CTA (4 warps) takes one item, one KV head and one split of its keys,
// and every warp holds all 16 queries as A fragments in registers. The split's keys
// are cut into steps of 16; warp w takes steps w, w + 4, w + 8, ... and runs its own
// cp.async pipeline of `stages` steps deep (K and V of a step, 16-bit as in the cache,
// gathered through the block table, one commit group per step) in its own part of
// shared memory, so the main loop has no CTA-wide barrier: a warp's S = Q·Kᵀ (16x16),
// online softmax (f32, exp2 of pre-scaled scores, running max and sum per query) and
// O += P·V (P rounded to the input type, O f32 in mma accumulators) start as soon as
// its own step has landed. Each lane looks up the block of one key of the warp's next
// step a step ahead, so the block-table read is off the critical path. At the end the
// four warps' states merge through shared memory; with split-KV the CTA writes its
// partial state (unnormalised O, max in log2 units, sum), and the splits that hold keys
// are combined by the last of their CTAs to finish (counted in batch.split_counters: no
// second kernel per layer) or, without counters, by MergeKernel. An empty split (graphs
// size the split count for the longest context) returns at once and is never read.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .row.col, 16-bit inputs), g = lane / 4, t = lane % 4:
//   A (16x16) a0: (g, 2t..2t+1)  a1: (g+8, 2t..)  a2: (g, 2t+8..)  a3: (g+8, 2t+8..)
//   B (16x8, k x n) b0: (k 2t..2t+1, n g)  b1: (k 2t+8.., n g)
//   C (16x8, f32) c0, c1: (g, 2t..2t+1)  c2, c3: (g+8, 2t..2t+1)
// ldmatrix.x4: lanes 8i..8i+7 address the rows of 8x8 matrix i; register i of lane l gets
// row l/4, columns 2(l%4)..+1 (with .trans: column l/4, rows 2(l%4)..+1), low index low.
// Shared-memory rows are padded to D + 8 elements, so the eight rows one ldmatrix phase
// reads start 16 bytes apart modulo 128 and hit distinct banks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "backend/cuda/attention_item.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/pdl.cuh"

namespace tg {
namespace cuda {
namespace {

using namespace mma;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kQueries = kAttentionItemQueries;
static_assert(kQueries == 16, "an item's queries are the 16 rows of one mma tile");
constexpr int kStepKeys = 16;                 // keys per warp step: the k of one P·V mma
constexpr int kCtaKeys = kWarps * kStepKeys;  // split ranges are whole multiples of this
constexpr int kMinStages = 2, kMaxStages = 4;

struct Shape {
  int q_heads, kv_heads, group, block_size, window;  // window 0: none
  float scale_log2;                                   // softmax scale × log2(e)
  int num_splits, stages;
};

// Shared memory of one CTA: each warp's `stages` steps of K and V (16 rows of D + 8
// elements each), reused at the end for the cross-warp merge (see MergeBytes).
__host__ __device__ constexpr int StepBytes(int d) { return 2 * kStepKeys * (d + 8) * 2; }
constexpr size_t PipelineBytes(int d, int stages) { return static_cast<size_t>(kWarps) * stages * StepBytes(d); }
constexpr size_t MergeBytes(int d) { return sizeof(float) * kWarps * kQueries * (2 + d + 4); }
constexpr size_t SharedBytes(int d, int stages) {
  return PipelineBytes(d, stages) > MergeBytes(d) ? PipelineBytes(d, stages) : MergeBytes(d);
}

// mma.cuh's CpAsyncWait for a pipeline depth known only at run time: at most `pending`
// (1..3, warp-uniform) of this thread's newest groups stay in flight.
__device__ __forceinline__ void CpAsyncWaitFor(int pending) {
  if (pending <= 1) {
    CpAsyncWait<1>();
  } else if (pending == 2) {
    CpAsyncWait<2>();
  } else {
    CpAsyncWait<3>();
  }
}

// Eight f32 values rounded to T, stored as 16 bytes.
template <typename T>
__device__ __forceinline__ void Store8(T* dst, const float (&v)[8], float scale) {
  uint4 raw;
  raw.x = Pack2<T>(v[0] * scale, v[1] * scale);
  raw.y = Pack2<T>(v[2] * scale, v[3] * scale);
  raw.z = Pack2<T>(v[4] * scale, v[5] * scale);
  raw.w = Pack2<T>(v[6] * scale, v[7] * scale);
  *reinterpret_cast<uint4*>(dst) = raw;
}

// Output row of local query lq of the item, [D] elements at the returned offset.
__device__ __forceinline__ int64_t QueryOffset(const AttentionItem& it, const Shape& sh, int kvh, int lq, int d) {
  const int qi = it.first_query + lq, row = qi / sh.group, head = kvh * sh.group + qi % sh.group;
  return (static_cast<int64_t>(it.row_start + row) * sh.q_heads + head) * d;
}

// Split-KV workspace (floats, within AttentionWorkspaceBytes): O of every (item, kv head,
// split, query) [n][D], then (max in log2 units, sum) [n][2], n = items · kv_heads · splits · 16.
__device__ __forceinline__ int64_t PartialIndex(const AttentionBatch& batch, const Shape& sh, int item, int kvh,
                                                int split, int lq) {
  return ((static_cast<int64_t>(item) * sh.kv_heads + kvh) * sh.num_splits + split) * kQueries + lq;
}
__device__ __forceinline__ int64_t PartialCount(const AttentionBatch& batch, const Shape& sh) {
  return batch.num_items * sh.kv_heads * sh.num_splits * kQueries;
}

// Combines the busy splits of (item, kv head) into `out`: one thread per (query, 8 dims).
// The partial states may come from other CTAs of the running kernel, so they are read
// past L1 (which is not coherent across SMs).
template <typename T, int D>
__device__ __forceinline__ void MergeSplits(const AttentionBatch& batch, const Shape& sh,
                                            const float* __restrict__ partial, const AttentionItem& it, int item,
                                            int kvh, T* __restrict__ out) {
  constexpr int kChunks = D / 8;
  const int busy = BusySplits<kCtaKeys>(it, sh.num_splits);
  const float* states = partial + PartialCount(batch, sh) * D;
  for (int u = threadIdx.x; u < it.queries * kChunks; u += blockDim.x) {
    const int lq = u / kChunks, c = (u % kChunks) * 8;
    const int64_t at0 = PartialIndex(batch, sh, item, kvh, 0, lq);  // split s at at0 + 16 s
    float row_max = -INFINITY;
#pragma unroll 4
    for (int s = 0; s < busy; ++s) row_max = fmaxf(row_max, __ldcg(states + (at0 + s * kQueries) * 2));
    float sum = 0.0f, acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int s = 0; s < busy; ++s) {
      const int64_t at = at0 + s * kQueries;
      const float2 state = __ldcg(reinterpret_cast<const float2*>(states + at * 2));
      const float w = state.x == -INFINITY ? 0.0f : Exp2(state.x - row_max);  // an empty split weighs 0
      sum += state.y * w;
      const float4* src = reinterpret_cast<const float4*>(partial + at * D + c);
      const float4 a = __ldcg(src), b = __ldcg(src + 1);
      acc[0] += w * a.x, acc[1] += w * a.y, acc[2] += w * a.z, acc[3] += w * a.w;
      acc[4] += w * b.x, acc[5] += w * b.y, acc[6] += w * b.z, acc[7] += w * b.w;
    }
    Store8(out + QueryOffset(it, sh, kvh, lq, D) + c, acc, sum > 0.0f ? 1.0f / sum : 0.0f);
  }
}

// CTAs per SM the kernel is compiled for: registers <= 65536 / (128 · this).
template <int D>
constexpr int MinBlocks() { return D == 64 ? 4 : 2; }

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, MinBlocks<D>())
    DecodeAttentionKernel(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                          AttentionBatch batch, Shape sh, float* __restrict__ partial, T* __restrict__ out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // mma.sync with bf16 and cp.async need sm_80
#else
  constexpr int kKSteps = D / 16;               // k steps of S = Q·Kᵀ over the head dim
  constexpr int kDimTiles = D / 8;              // 8-dim column tiles of O
  constexpr int kChunks = D / 8;                // 16-byte chunks of a cache row
  constexpr int kKeysPerPass = 32 / kChunks;    // keys one warp-wide round of cp.async covers
  constexpr int kPitch = (D + 8) * 2;           // bytes per shared-memory row
  constexpr int kVOffset = kStepKeys * kPitch;  // V after K within a step
  constexpr int kOPitch = D + 4;                // floats per row of the merge's O staging
  static_assert(32 % kChunks == 0 && kStepKeys % kKeysPerPass == 0, "copy shape");
  extern __shared__ __align__(16) unsigned char smem[];
  PdlWaitForPrevious();  // q and this step's K/V come from the kernel before (RoPE)

  const int item = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const AttentionItem it = AttentionItemAt(batch, sh.group, sh.window, item);
  const int32_t* blocks = batch.block_tables + batch.seq_block_start[it.seq];

  const KeyRange keys = SplitRange<kCtaKeys>(it, sh.num_splits, split);
  const int begin = keys.begin, end = keys.end;
  // An empty split has nothing to add: MergeSplits reads only the busy ones.
  if (sh.num_splits > 1 && begin >= end) return;

  // The keys rows g and g + 8 of the tile see: [lo, hi] (none for padding rows).
  int lo[2], hi[2];
  // Q as A fragments (qa[s][r]: row g + 8r at dims 16s + 2t, qa[s][2 + r]: at 16s + 2t + 8).
  uint32_t qa[kKSteps][4];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int lq = g + 8 * r;
    const bool real = lq < it.queries;
    const int qpos = it.position + (it.first_query + lq) / sh.group;
    hi[r] = real ? min(qpos, end - 1) : -1;
    lo[r] = sh.window > 0 ? qpos - sh.window + 1 : 0;
    const T* src = q + (real ? QueryOffset(it, sh, kvh, lq, D) : 0);
#pragma unroll
    for (int s = 0; s < kKSteps; ++s) {
      qa[s][r] = real ? *reinterpret_cast<const uint32_t*>(src + 16 * s + 2 * t) : 0u;
      qa[s][2 + r] = real ? *reinterpret_cast<const uint32_t*>(src + 16 * s + 2 * t + 8) : 0u;
    }
  }

  // This warp's steps: keys [first + kCtaKeys·n, +kStepKeys) for n < steps.
  const int first = begin + warp * kStepKeys;
  const int steps = first < end ? (end - first + kCtaKeys - 1) / kCtaKeys : 0;
  const uint32_t warp_smem = SmemAddr(smem) + static_cast<uint32_t>(warp * sh.stages * StepBytes(D));

  // Lane l looks up key l % 16 of the next step to issue, a step ahead of its use.
  int next_key = first + (lane & 15);
  int next_index = static_cast<int>(static_cast<unsigned>(next_key) / static_cast<unsigned>(sh.block_size));
  int next_block = next_key < end ? blocks[next_index] : 0;

  // Starts the copy of the next step (steps are issued in order) into `stage`.
  auto issue = [&](int stage) {
    // Cache row of this lane's key, -1 past the split's end (zero-filled, never read).
    const int my_row = next_key < end
                           ? (next_block * sh.kv_heads + kvh) * sh.block_size + (next_key - next_index * sh.block_size)
                           : -1;
    next_key += kCtaKeys;
    next_index = static_cast<int>(static_cast<unsigned>(next_key) / static_cast<unsigned>(sh.block_size));
    next_block = next_key < end ? blocks[next_index] : 0;
    const uint32_t k_dst = warp_smem + static_cast<uint32_t>(stage * StepBytes(D));
#pragma unroll
    for (int pass = 0; pass < kStepKeys / kKeysPerPass; ++pass) {
      const int key = pass * kKeysPerPass + lane / kChunks, c = lane % kChunks;
      const int row = __shfl_sync(0xffffffffu, my_row, key);
      const int64_t src = row >= 0 ? static_cast<int64_t>(row) * D + c * 8 : 0;
      const uint32_t dst = k_dst + static_cast<uint32_t>(key * kPitch + c * 16);
      CpAsync16(dst, k_cache + src, row >= 0);
      CpAsync16(dst + kVOffset, v_cache + src, row >= 0);
    }
  };

  float o[kDimTiles][4];
#pragma unroll
  for (int j = 0; j < kDimTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // per row g + 8r; l is this lane's part

  // ldmatrix row addresses of this lane inside a step (see the layouts at the top): K non-
  // transposed (matrices: keys 0-7 / 8-15 × dims 0-7 / 8-15 of a k step), V transposed
  // (keys 0-7 / 8-15 × dims 0-7 / 8-15 of two O column tiles).
  const uint32_t k_lane = static_cast<uint32_t>(((lane & 7) + ((lane >> 4) << 3)) * kPitch + ((lane >> 3) & 1) * 16);
  const uint32_t v_lane =
      static_cast<uint32_t>(kVOffset + ((lane & 7) + ((lane >> 3) & 1) * 8) * kPitch + (lane >> 4) * 16);

  for (int s = 0; s < sh.stages - 1; ++s) {
    if (s < steps) issue(s);
    CpAsyncCommit();  // empty groups keep the count uniform
  }
  int read_stage = 0, write_stage = sh.stages - 1;
  for (int n = 0; n < steps; ++n) {
    if (n + sh.stages - 1 < steps) issue(write_stage);
    CpAsyncCommit();
    CpAsyncWaitFor(sh.stages - 1);  // step n's group is done
    __syncwarp();                // and visible to every lane
    const uint32_t tile = warp_smem + static_cast<uint32_t>(read_stage * StepBytes(D));

    // S = Q·Kᵀ for the step's 16 keys: s_acc[nt] holds keys 8nt..8nt+7.
    float s_acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      uint32_t kb[4];
      Ldmatrix4(tile + k_lane + ks * 32, kb);
      Mma<T>(s_acc[0], qa[ks], kb[0], kb[1]);
      Mma<T>(s_acc[1], qa[ks], kb[2], kb[3]);
    }

    // Mask, scale, online softmax. Element e of tile nt: row g + 8(e / 2), key 8nt + 2t + e % 2.
    const int key0 = first + n * kCtaKeys + 2 * t;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int p = key0 + 8 * nt + (e & 1), r = e >> 1;
        const float x = p >= lo[r] && p <= hi[r] ? s_acc[nt][e] * sh.scale_log2 : -INFINITY;
        s_acc[nt][e] = x;
        tile_max[r] = fmaxf(tile_max[r], x);
      }
    }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float m_new = fmaxf(m[r], tile_max[r]);
      base[r] = m_new == -INFINITY ? 0.0f : m_new;  // nothing seen yet: probabilities stay 0
      alpha[r] = Exp2(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float prob = Exp2(s_acc[nt][e] - base[e >> 1]);
        s_acc[nt][e] = prob;
        l[e >> 1] += prob;
      }
    }
    uint32_t pa[4];
    pa[0] = Pack2<T>(s_acc[0][0], s_acc[0][1]);
    pa[1] = Pack2<T>(s_acc[0][2], s_acc[0][3]);
    pa[2] = Pack2<T>(s_acc[1][0], s_acc[1][1]);
    pa[3] = Pack2<T>(s_acc[1][2], s_acc[1][3]);

    // O = O·alpha + P·V.
#pragma unroll
    for (int j = 0; j < kDimTiles; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }
#pragma unroll
    for (int jj = 0; jj < kDimTiles / 2; ++jj) {
      uint32_t vb[4];
      Ldmatrix4Trans(tile + v_lane + jj * 32, vb);
      Mma<T>(o[2 * jj], pa, vb[0], vb[1]);
      Mma<T>(o[2 * jj + 1], pa, vb[2], vb[3]);
    }
    __syncwarp();  // every lane's reads of this stage are done before it is refilled
    read_stage = read_stage + 1 == sh.stages ? 0 : read_stage + 1;
    write_stage = write_stage + 1 == sh.stages ? 0 : write_stage + 1;
  }
  CpAsyncWait<0>();  // only empty groups can remain; the buffers are reused below
  // Only the short merge is left: the next kernel may be scheduled (it waits for our end).
  PdlLaunchNext();

  // Merge the four warps' states: max and sum per row, then O rescaled to the common max.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  float* m_s = reinterpret_cast<float*>(smem);  // [kWarps][16]
  float* l_s = m_s + kWarps * kQueries;         // [kWarps][16]
  float* o_s = l_s + kWarps * kQueries;         // [kWarps][16][kOPitch]
  __syncthreads();                              // every warp is done with its pipeline buffers
  if (t == 0) {
    m_s[warp * kQueries + g] = m[0];
    m_s[warp * kQueries + g + 8] = m[1];
    l_s[warp * kQueries + g] = l[0];
    l_s[warp * kQueries + g + 8] = l[1];
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int lq = g + 8 * r;
    float row_max = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) row_max = fmaxf(row_max, m_s[w * kQueries + lq]);
    const float f = m[r] == -INFINITY ? 0.0f : Exp2(m[r] - row_max);
    float* dst = o_s + (warp * kQueries + lq) * kOPitch + 2 * t;
#pragma unroll
    for (int j = 0; j < kDimTiles; ++j) {
      *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(o[j][2 * r] * f, o[j][2 * r + 1] * f);
    }
  }
  __syncthreads();

  // One thread per (query, 8 dims): the sum over warps, normalised or as a split's partial.
  for (int u = threadIdx.x; u < it.queries * kChunks; u += kThreads) {
    const int lq = u / kChunks, c = (u % kChunks) * 8;
    float row_max = -INFINITY, sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) row_max = fmaxf(row_max, m_s[w * kQueries + lq]);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float mw = m_s[w * kQueries + lq];
      sum += mw == -INFINITY ? 0.0f : l_s[w * kQueries + lq] * Exp2(mw - row_max);
    }
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float4* src = reinterpret_cast<const float4*>(o_s + (w * kQueries + lq) * kOPitch + c);
      const float4 a = src[0], b = src[1];
      acc[0] += a.x, acc[1] += a.y, acc[2] += a.z, acc[3] += a.w;
      acc[4] += b.x, acc[5] += b.y, acc[6] += b.z, acc[7] += b.w;
    }
    if (sh.num_splits == 1) {
      Store8(out + QueryOffset(it, sh, kvh, lq, D) + c, acc, sum > 0.0f ? 1.0f / sum : 0.0f);
    } else {
      const int64_t at = PartialIndex(batch, sh, item, kvh, split, lq);
      float4* dst = reinterpret_cast<float4*>(partial + at * D + c);
      dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
      dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
      if (c == 0) {
        *reinterpret_cast<float2*>(partial + PartialCount(batch, sh) * D + at * 2) = make_float2(row_max, sum);
      }
    }
  }
  if (sh.num_splits > 1 && batch.split_counters) {
    // Count this split in; the last busy split of the (item, KV head) to arrive merges them
    // all and zeroes the count for the next call.
    __shared__ bool merge_here;
    __threadfence();  // this thread's partial stores are visible device-wide before the count
    __syncthreads();
    if (threadIdx.x == 0) {
      int32_t* counter = batch.split_counters + static_cast<int64_t>(item) * sh.kv_heads + kvh;
      merge_here = atomicAdd(counter, 1) == BusySplits<kCtaKeys>(it, sh.num_splits) - 1;
      if (merge_here) *counter = 0;  // every busy split has arrived
    }
    __syncthreads();
    if (merge_here) {
      __threadfence();  // the other splits' partials, counted before ours, are read after the count
      MergeSplits<T, D>(batch, sh, partial, it, item, kvh, out);
    }
  }
#endif
}

// Combines the splits of each (item, kv head): one thread per (query, 8 dims).
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    MergeKernel(AttentionBatch batch, Shape sh, const float* __restrict__ partial, T* __restrict__ out) {
  PdlStartShortKernel();
  const int item = blockIdx.x, kvh = blockIdx.y;
  MergeSplits<T, D>(batch, sh, partial, AttentionItemAt(batch, sh.group, sh.window, item), item, kvh, out);
}

// Pipeline depth per head dim on one device, and the one-time shared-memory opt-in of
// its kernels (a per-device, per-kernel driver setting: set once, not per launch).
struct DeviceSetup {
  bool done = false;
  int stages64 = kMinStages, stages128 = kMinStages;
};

// The deepest pipeline (up to 3 steps, or TEXT_GEN_DECODE_STAGES in [2, 4] for tuning) that
// fits one CTA, preferring depths that still fit two CTAs per SM.
int PickStages(int d, int per_block, int per_sm) {
  if (const char* env = std::getenv("TEXT_GEN_DECODE_STAGES")) {
    const int want = std::atoi(env);
    if (want >= kMinStages && want <= kMaxStages && SharedBytes(d, want) <= static_cast<size_t>(per_block)) {
      return want;
    }
  }
  for (int s = 3; s > kMinStages; --s) {
    const size_t bytes = SharedBytes(d, s);
    if (bytes <= static_cast<size_t>(per_block) && 2 * (bytes + 1024) <= static_cast<size_t>(per_sm)) return s;
  }
  return kMinStages;
}

template <typename T, int D>
void AllowShared(int stages) {
  auto kernel = DecodeAttentionKernel<T, D>;
  TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(SharedBytes(D, stages))));
  TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                     cudaSharedmemCarveoutMaxShared));
}

const DeviceSetup& SetupForCurrentDevice() {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static DeviceSetup setups[kMaxDevices];
  int device = 0;
  TG_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices) throw std::runtime_error("decode_attention: device id out of range");
  std::lock_guard<std::mutex> lock(mu);
  DeviceSetup& s = setups[device];
  if (s.done) return s;
  int per_block = 0, per_sm = 0;
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  s.stages64 = PickStages(64, per_block, per_sm);
  s.stages128 = PickStages(128, per_block, per_sm);
  AllowShared<__nv_bfloat16, 64>(s.stages64);
  AllowShared<__half, 64>(s.stages64);
  AllowShared<__nv_bfloat16, 128>(s.stages128);
  AllowShared<__half, 128>(s.stages128);
  s.done = true;
  return s;
}

template <typename T, int D>
void LaunchDim(cudaStream_t stream, const void* q, KvLayer cache, const AttentionBatch& batch, Shape sh,
               float* workspace, void* out) {
  const dim3 grid(static_cast<unsigned>(batch.num_items), static_cast<unsigned>(sh.kv_heads),
                  static_cast<unsigned>(sh.num_splits));
  LaunchWithPdl(PdlKernel::kAttention, DecodeAttentionKernel<T, D>, grid, dim3(kThreads), SharedBytes(D, sh.stages),
                stream, static_cast<const T*>(q), static_cast<const T*>(cache.k), static_cast<const T*>(cache.v), batch,
                sh, workspace, static_cast<T*>(out));
  if (sh.num_splits > 1 && !batch.split_counters) {
    TG_CUDA_CHECK_LAUNCH("decode_attention");
    const dim3 merge_grid(static_cast<unsigned>(batch.num_items), static_cast<unsigned>(sh.kv_heads));
    LaunchWithPdl(PdlKernel::kAttention, MergeKernel<T, D>, merge_grid, dim3(kThreads), 0, stream, batch, sh, workspace,
                  static_cast<T*>(out));
  }
}

template <typename T>
void Launch(cudaStream_t stream, const void* q, KvLayer cache, const AttentionBatch& batch, int64_t head_dim,
            Shape sh, float* workspace, void* out) {
  if (head_dim == 128) {
    LaunchDim<T, 128>(stream, q, cache, batch, sh, workspace, out);
  } else {
    LaunchDim<T, 64>(stream, q, cache, batch, sh, workspace, out);
  }
}

}  // namespace

bool DecodeAttentionSupports(int64_t head_dim) {
  // TEXT_GEN_DECODE_ATTENTION=0 keeps every head dim on the CUDA-core kernel (A/B timings).
  static const bool enabled = SwitchedOn("TEXT_GEN_DECODE_ATTENTION");
  return enabled && (head_dim == 64 || head_dim == 128);
}

void LaunchDecodeAttention(cudaStream_t stream, ElemType type, const void* q, KvLayer cache,
                           const AttentionBatch& batch, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                           int64_t window, float scale, int num_splits, float* workspace, void* out) {
  if (batch.num_items <= 0) return;
  if (head_dim != 64 && head_dim != 128) {
    throw std::runtime_error("decode_attention: head_dim " + std::to_string(head_dim) +
                             " is not supported (64 or 128); use LaunchPagedAttention");
  }
  if (kv_heads <= 0 || q_heads % kv_heads != 0 || cache.block_size <= 0) {
    throw std::runtime_error("decode_attention: q_heads must be a multiple of kv_heads, block_size positive");
  }
  if (num_splits < 1 || (num_splits > 1 && !workspace)) {
    throw std::runtime_error("decode_attention: split-KV needs num_splits >= 1 and a workspace");
  }
  const DeviceSetup& setup = SetupForCurrentDevice();
  const Shape sh{static_cast<int>(q_heads),
                 static_cast<int>(kv_heads),
                 static_cast<int>(q_heads / kv_heads),
                 static_cast<int>(cache.block_size),
                 static_cast<int>(window > 0 ? std::min<int64_t>(window, INT_MAX) : 0),
                 scale * kLog2e,
                 num_splits,
                 head_dim == 128 ? setup.stages128 : setup.stages64};
  TG_DISPATCH_HALF(type, Launch, stream, q, cache, batch, head_dim, sh, workspace, out);
  TG_CUDA_CHECK_LAUNCH(num_splits > 1 ? "decode_attention merge" : "decode_attention");
}

}  // namespace cuda
}  // namespace tg
