// Paged causal attention for prefill and decode rows alike, on CUDA cores.
//
// One CTA takes one work item (up to kAttentionItemQueries query vectors of one
// sequence that share a KV head: consecutive rows × that head's query-head group)
// and one of its key ranges (all of them unless split-KV), and walks those keys in
// tiles of 32 positions gathered through the block table. Each tile of K and V is
// read from the cache once per CTA (16-byte loads) and widened to f32 in shared
// memory, so with GQA every query head of the group shares one read. Each warp
// owns up to four of the item's queries; lane j scores key j of the tile (float4
// shared-memory reads), lane l accumulates output dims [4l, 4l + 4) (+128 for d 256),
// and the softmax is online (running max and sum, f32). Split-KV CTAs write their
// partial (max, sum, unnormalised output) and MergeSplitsKernel combines them.
// head_dim must be a multiple of 8 (16-byte cache loads); 64, 128 and 256 are
// compiled with the dimension fixed, others with it read at run time.
// Head dims 64 and 128 go to the tensor-core kernel of decode_attention.cu instead
// (DecodeAttentionSupports); this one stays for the others (8, 80, 256, ...) and as
// the A/B baseline (TEXT_GEN_DECODE_ATTENTION=0).
#include <cfloat>
#include <stdexcept>
#include <string>

#include "backend/cuda/attention_item.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/kernels.h"

namespace tg {
namespace cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 32;  // key positions per tile: one per lane
constexpr int kQueriesPerWarp = kAttentionItemQueries / kWarps;
constexpr int kMaxDim = 256;
constexpr int kMaxDimPerLane = kMaxDim / 32;

struct Shape {
  int q_heads, kv_heads, head_dim, group;
  int64_t block_size, window;
  float scale;
  int num_splits;
};

// First of the four output dims a lane accumulates in its h-th group (d is a multiple of 4).
__device__ __forceinline__ int OwnedDim(int lane, int h) { return 4 * lane + 128 * h; }

// Widens 8 consecutive elements (16 bytes) to floats.
template <typename T>
__device__ __forceinline__ void Load8(const T* src, float* dst) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int e = 0; e < 8; ++e) dst[e] = ToFloat(v[e]);
}

// D > 0: head_dim fixed at compile time; D == 0: sh.head_dim.
template <typename T, int D>
__global__ void PagedAttentionKernel(const T* q, const T* k_cache, const T* v_cache, AttentionBatch batch, Shape sh,
                                     float* partial, T* out) {
  extern __shared__ __align__(16) float smem[];
  const int d = D > 0 ? D : sh.head_dim;
  const int kd = d + 4;  // K rows padded: lane j's float4 reads of row j don't collide in a quarter warp
  float* q_s = smem;                             // [kAttentionItemQueries][d]
  float* k_s = q_s + kAttentionItemQueries * d;  // [kTile][d + 1]
  float* v_s = k_s + kTile * kd;                 // [kTile][d]
  float* p_s = v_s + kTile * d;                  // [kWarps][kTile]

  const int item = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const AttentionItem it = AttentionItemAt(batch, sh.group, sh.window, item);
  const int32_t* blocks = batch.block_tables + batch.seq_block_start[it.seq];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  // This CTA's share of the keys: whole tiles, the last split taking the remainder.
  const KeyRange keys = SplitRange<kTile>(it, sh.num_splits, split);
  const int64_t begin = keys.begin, end = keys.end;

  // Queries of the item, widened to f32: local query lq is (row, g) = divmod(first_query + lq, group).
  for (int idx = threadIdx.x; idx < kAttentionItemQueries * d; idx += kThreads) {
    const int lq = idx / d, i = idx % d;
    float v = 0.0f;
    if (lq < it.queries) {
      const int qi = it.first_query + lq, row = qi / sh.group, head = kvh * sh.group + qi % sh.group;
      v = ToFloat(q[(static_cast<int64_t>(it.row_start + row) * sh.q_heads + head) * d + i]);
    }
    q_s[idx] = v;
  }

  float acc[kQueriesPerWarp][kMaxDimPerLane];
  float m[kQueriesPerWarp], l[kQueriesPerWarp];
#pragma unroll
  for (int c = 0; c < kQueriesPerWarp; ++c) {
    m[c] = -FLT_MAX;
    l[c] = 0.0f;
#pragma unroll
    for (int e = 0; e < kMaxDimPerLane; ++e) acc[c][e] = 0.0f;
  }

  for (int64_t tile = begin; tile < end; tile += kTile) {
    __syncthreads();  // the previous tile is consumed (and q_s written, on the first pass)
    const int vecs = d / 8;
    for (int idx = threadIdx.x; idx < kTile * vecs; idx += kThreads) {
      const int j = idx / vecs, i = (idx % vecs) * 8;
      const int64_t p = tile + j;
      float kv[8], vv[8];
      if (p < end) {
        const int64_t block = blocks[p / sh.block_size], slot = p % sh.block_size;
        const int64_t at = ((block * sh.kv_heads + kvh) * sh.block_size + slot) * d + i;
        Load8(k_cache + at, kv);
        Load8(v_cache + at, vv);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) kv[e] = vv[e] = 0.0f;
      }
      float4* kdst = reinterpret_cast<float4*>(k_s + j * kd + i);
      float4* vdst = reinterpret_cast<float4*>(v_s + j * d + i);
      kdst[0] = make_float4(kv[0], kv[1], kv[2], kv[3]);
      kdst[1] = make_float4(kv[4], kv[5], kv[6], kv[7]);
      vdst[0] = make_float4(vv[0], vv[1], vv[2], vv[3]);
      vdst[1] = make_float4(vv[4], vv[5], vv[6], vv[7]);
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kQueriesPerWarp; ++c) {
      const int lq = warp + c * kWarps;
      if (lq >= it.queries) break;  // warp-uniform
      const int64_t qpos = static_cast<int64_t>(it.position) + (it.first_query + lq) / sh.group;
      const int64_t p = tile + lane;
      const int64_t lowest = sh.window > 0 ? qpos - sh.window + 1 : 0;
      const bool visible = p <= qpos && p >= lowest && p < end;
      float s = -FLT_MAX;
      if (visible) {
        const float4* qv = reinterpret_cast<const float4*>(q_s + lq * d);
        const float4* kv = reinterpret_cast<const float4*>(k_s + lane * kd);
        float dot = 0.0f;
#pragma unroll 8
        for (int i = 0; i < d / 4; ++i) {
          const float4 a = qv[i], b = kv[i];
          dot += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
        }
        s = dot * sh.scale;
      }
      float tile_max = s;
      for (int o = 16; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
      if (tile_max == -FLT_MAX) continue;  // nothing visible to this query in this tile
      const float m_new = fmaxf(m[c], tile_max);
      const float alpha = __expf(m[c] - m_new);
      const float prob = visible ? __expf(s - m_new) : 0.0f;
      float tile_sum = prob;
      for (int o = 16; o > 0; o >>= 1) tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, o);
      l[c] = l[c] * alpha + tile_sum;
      m[c] = m_new;
      float* pw = p_s + warp * kTile;
      pw[lane] = prob;
      __syncwarp();
#pragma unroll
      for (int h = 0; h < kMaxDimPerLane / 4; ++h) {  // this lane's dims [OwnedDim(lane, h), +4)
        const int i = OwnedDim(lane, h);
        if (i < d) {
          float4 a = make_float4(acc[c][4 * h] * alpha, acc[c][4 * h + 1] * alpha, acc[c][4 * h + 2] * alpha,
                                 acc[c][4 * h + 3] * alpha);
#pragma unroll 8
          for (int j = 0; j < kTile; ++j) {
            const float p = pw[j];
            const float4 v = *reinterpret_cast<const float4*>(v_s + j * d + i);
            a.x += p * v.x;
            a.y += p * v.y;
            a.z += p * v.z;
            a.w += p * v.w;
          }
          acc[c][4 * h] = a.x;
          acc[c][4 * h + 1] = a.y;
          acc[c][4 * h + 2] = a.z;
          acc[c][4 * h + 3] = a.w;
        }
      }
      __syncwarp();
    }
  }

#pragma unroll
  for (int c = 0; c < kQueriesPerWarp; ++c) {
    const int lq = warp + c * kWarps;
    if (lq >= it.queries) break;
    if (sh.num_splits > 1) {
      // Partial state of (item, kv head, split, query): acc[d], max, sum.
      float* dst = partial + ((((static_cast<int64_t>(item) * sh.kv_heads + kvh) * sh.num_splits + split) *
                               kAttentionItemQueries + lq) * (d + 2));
#pragma unroll
      for (int e = 0; e < kMaxDimPerLane; ++e) {
        const int i = OwnedDim(lane, e / 4) + e % 4;
        if (i < d) dst[i] = acc[c][e];
      }
      if (lane == 0) {
        dst[d] = m[c];
        dst[d + 1] = l[c];
      }
      continue;
    }
    const int qi = it.first_query + lq, row = qi / sh.group, head = kvh * sh.group + qi % sh.group;
    T* o = out + (static_cast<int64_t>(it.row_start + row) * sh.q_heads + head) * d;
    const float inv = l[c] > 0.0f ? 1.0f / l[c] : 0.0f;
#pragma unroll
    for (int e = 0; e < kMaxDimPerLane; ++e) {
      const int i = OwnedDim(lane, e / 4) + e % 4;
      if (i < d) o[i] = FromFloat<T>(acc[c][e] * inv);
    }
  }
}

// Combines the splits of each (item, kv head, query): one warp per query.
template <typename T>
__global__ void MergeSplitsKernel(AttentionBatch batch, Shape sh, const float* partial, T* out) {
  const int item = blockIdx.x, kvh = blockIdx.y;
  const AttentionItem it = AttentionItemAt(batch, sh.group, sh.window, item);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, d = sh.head_dim;
  for (int lq = warp; lq < it.queries; lq += kWarps) {
    auto state = [&](int split) {
      return partial + ((((static_cast<int64_t>(item) * sh.kv_heads + kvh) * sh.num_splits + split) *
                         kAttentionItemQueries + lq) * (d + 2));
    };
    float max_all = -FLT_MAX;
    for (int s = 0; s < sh.num_splits; ++s) max_all = fmaxf(max_all, state(s)[d]);
    float sum = 0.0f;
    for (int s = 0; s < sh.num_splits; ++s) sum += state(s)[d + 1] * __expf(state(s)[d] - max_all);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    const int qi = it.first_query + lq, row = qi / sh.group, head = kvh * sh.group + qi % sh.group;
    T* o = out + (static_cast<int64_t>(it.row_start + row) * sh.q_heads + head) * d;
    for (int i = lane; i < d; i += 32) {
      float a = 0.0f;
      for (int s = 0; s < sh.num_splits; ++s) a += state(s)[i] * __expf(state(s)[d] - max_all);
      o[i] = FromFloat<T>(a * inv);
    }
  }
}

size_t SharedBytes(int64_t d) {
  return sizeof(float) * (kAttentionItemQueries * d + kTile * (d + 4) + kTile * d + kWarps * kTile);
}

template <typename T, int D>
void LaunchMain(cudaStream_t stream, dim3 grid, size_t smem, const void* q, KvLayer cache, const AttentionBatch& batch,
                Shape sh, float* partial, void* out) {
  if (smem > 48 * 1024) {
    // Past the default limit; the opt-in is per kernel and cheap to repeat.
    TG_CUDA_CHECK(cudaFuncSetAttribute(PagedAttentionKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
  }
  PagedAttentionKernel<T, D><<<grid, kThreads, smem, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(cache.k), static_cast<const T*>(cache.v), batch, sh, partial,
      static_cast<T*>(out));
}

template <typename T>
void Launch(cudaStream_t stream, const void* q, KvLayer cache, const AttentionBatch& batch, Shape sh, float* partial,
            void* out) {
  const size_t smem = SharedBytes(sh.head_dim);
  dim3 grid(static_cast<unsigned>(batch.num_items), static_cast<unsigned>(sh.kv_heads),
            static_cast<unsigned>(sh.num_splits));
  switch (sh.head_dim) {
    case 64: LaunchMain<T, 64>(stream, grid, smem, q, cache, batch, sh, partial, out); break;
    case 128: LaunchMain<T, 128>(stream, grid, smem, q, cache, batch, sh, partial, out); break;
    case 256: LaunchMain<T, 256>(stream, grid, smem, q, cache, batch, sh, partial, out); break;
    default: LaunchMain<T, 0>(stream, grid, smem, q, cache, batch, sh, partial, out); break;
  }
  if (sh.num_splits > 1) {
    TG_CUDA_CHECK_LAUNCH("paged_attention");
    dim3 merge_grid(static_cast<unsigned>(batch.num_items), static_cast<unsigned>(sh.kv_heads));
    MergeSplitsKernel<T><<<merge_grid, kThreads, 0, stream>>>(batch, sh, partial, static_cast<T*>(out));
  }
}

}  // namespace

void LaunchPagedAttention(cudaStream_t stream, ElemType type, const void* q, KvLayer cache,
                          const AttentionBatch& batch, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                          int64_t window, float scale, int num_splits, float* workspace, void* out) {
  if (batch.num_items <= 0) return;
  if (head_dim > kMaxDim || head_dim % 8 != 0) {
    throw std::runtime_error("paged_attention: head_dim " + std::to_string(head_dim) +
                             " is not supported (a multiple of 8, at most 256)");
  }
  if (num_splits < 1 || (num_splits > 1 && !workspace)) {
    throw std::runtime_error("paged_attention: split-KV needs num_splits >= 1 and a workspace");
  }
  if (DecodeAttentionSupports(head_dim)) {
    LaunchDecodeAttention(stream, type, q, cache, batch, q_heads, kv_heads, head_dim, window, scale, num_splits,
                          workspace, out);
    return;
  }
  Shape sh{static_cast<int>(q_heads), static_cast<int>(kv_heads), static_cast<int>(head_dim),
           static_cast<int>(q_heads / kv_heads), cache.block_size, window, scale, num_splits};
  TG_DISPATCH_HALF(type, Launch, stream, q, cache, batch, sh, workspace, out);
  TG_CUDA_CHECK_LAUNCH(num_splits > 1 ? "paged_attention merge" : "paged_attention");
}

}  // namespace cuda
}  // namespace tg
