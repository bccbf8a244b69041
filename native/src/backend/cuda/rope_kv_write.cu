// RoPE fused with the KV-cache write. A CTA takes one token row and kHeadsPerCta of its
// heads (query, key or value), so that a decode row is spread over several SMs: the
// kernel is latency-bound at batch 1, and one CTA looping over all heads of a row made it
// several times slower. A step of kWholeRowRows rows or more (a prefill) has rows enough
// to fill the GPU, and there a CTA takes all heads of its row: with 4 heads, each of a
// row's CTAs repeated the row's sines and cosines and kept 3/4 of its threads idle, and an
// 8k-token prefill's call took twice its bytes' time (cuda-notes, session 7). cos/sin of
// each frequency are computed per CTA (from the f32 angle, in double, as the CPU backend
// does); q is rotated into q_out, and k (rotated) and v go straight into their paged
// slots. Each thread moves runs of 8 elements with 16-byte loads and stores where the
// head dim allows (half a head a multiple of 8): a prefill's rows are bandwidth-bound,
// and 2-byte accesses ran at a third of it.
#include <cstdint>
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope.cuh"

namespace tg {
namespace cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kHeadsPerCta = 4;
constexpr int64_t kWholeRowRows = 256;
constexpr int kMaxHalf = 256;  // head_dim <= 512

// W consecutive elements of a bf16/fp16 row, plus its f32 bias when there is one, as f32.
template <typename T, int W>
__device__ __forceinline__ void LoadRun(const T* src, const float* bias, float (&v)[W]) {
  if constexpr (W == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = ToFloat(e[j]);
    if (bias) {
      const float4 b0 = *reinterpret_cast<const float4*>(bias), b1 = *reinterpret_cast<const float4*>(bias + 4);
      v[0] += b0.x, v[1] += b0.y, v[2] += b0.z, v[3] += b0.w, v[4] += b1.x, v[5] += b1.y, v[6] += b1.z, v[7] += b1.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = ToFloat(src[j]) + (bias ? bias[j] : 0.0f);
  }
}

template <typename T, int W>
__device__ __forceinline__ void StoreRun(T* dst, const float (&v)[W]) {
  if constexpr (W == 8) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) e[j] = FromFloat<T>(v[j]);
    *reinterpret_cast<uint4*>(dst) = raw;
  } else {
#pragma unroll
    for (int j = 0; j < W; ++j) dst[j] = FromFloat<T>(v[j]);
  }
}

// W: elements per thread access, 8 (16-byte runs) or 1.
template <typename T, int W>
__global__ void RopeKvWriteKernel(const T* qkv, const float* bias, const int32_t* positions, const float* inv_freq,
                                  const int32_t* freq_index, const int32_t* slot_block, const int32_t* slot_offset,
                                  int q_heads, int kv_heads, int head_dim, int heads_per_cta, T* q_out, T* k_cache,
                                  T* v_cache, int64_t block_size) {
  PdlStartShortKernel();
  __shared__ float cos_s[kMaxHalf], sin_s[kMaxHalf];
  const int64_t r = blockIdx.x;
  const int half = head_dim / 2;
  const int rot_heads = q_heads + kv_heads;
  const int head_begin = blockIdx.y * heads_per_cta;
  const int head_end = min(head_begin + heads_per_cta, rot_heads + kv_heads);
  if (head_begin < rot_heads) {
    const float* freqs = inv_freq + (freq_index ? static_cast<int64_t>(freq_index[r]) * half : 0);
    const float pos = static_cast<float>(positions[r]);
    for (int i = threadIdx.x; i < half; i += kThreads) RopeCosSin(pos, freqs[i], &cos_s[i], &sin_s[i]);
    __syncthreads();
  }
  const int width = (q_heads + 2 * kv_heads) * head_dim;
  const T* row = qkv + r * width;
  auto load = [&](int col, float(&v)[W]) { LoadRun<T, W>(row + col, bias ? bias + col : nullptr, v); };
  // Slot base of this token for KV head h: [block][h][slot][d].
  const int64_t block = slot_block[r], offset = slot_offset[r];
  auto slot = [&](int h) { return KvSlot(block, offset, h, kv_heads, block_size, head_dim); };

  // Rotated pairs (i, i + half) of this CTA's q and k heads, W of each at a time.
  const int rot_end = min(head_end, rot_heads), runs = half / W;
  for (int idx = threadIdx.x; idx < (rot_end - head_begin) * runs; idx += kThreads) {
    const int h = head_begin + idx / runs, i = idx % runs * W;
    const int col = h * head_dim + i;
    float a[W], b[W], lo[W], hi[W];
    load(col, a);
    load(col + half, b);
#pragma unroll
    for (int j = 0; j < W; ++j) RopeRotate(a[j], b[j], cos_s[i + j], sin_s[i + j], &lo[j], &hi[j]);
    T* dst = h < q_heads ? q_out + r * q_heads * head_dim + col : k_cache + slot(h - q_heads) + i;
    StoreRun<T, W>(dst, lo);
    StoreRun<T, W>(dst + half, hi);
  }
  // Its v heads, copied.
  const int v_begin = max(head_begin, rot_heads), v_runs = head_dim / W;
  for (int idx = threadIdx.x; idx < (head_end - v_begin) * v_runs; idx += kThreads) {
    const int h = v_begin + idx / v_runs, i = idx % v_runs * W;
    float v[W];
    load(h * head_dim + i, v);
    StoreRun<T, W>(v_cache + slot(h - rot_heads) + i, v);
  }
}

template <typename T>
void Launch(cudaStream_t stream, const void* qkv, const float* bias, const int32_t* positions, const float* inv_freq,
            const int32_t* freq_index, const int32_t* slot_block, const int32_t* slot_offset, int64_t rows,
            int64_t q_heads, int64_t kv_heads, int64_t head_dim, void* q_out, KvLayer cache) {
  const int64_t heads = q_heads + 2 * kv_heads;
  const int heads_per_cta = static_cast<int>(rows >= kWholeRowRows ? heads : kHeadsPerCta);
  const unsigned head_groups = static_cast<unsigned>((heads + heads_per_cta - 1) / heads_per_cta);
  // Every run of 8 starts 16 bytes into an aligned row (and 32 into the f32 bias).
  const bool runs_of_8 = (head_dim / 2) % 8 == 0 && Aligned(qkv, 16) && Aligned(q_out, 16) && Aligned(cache.k, 16) &&
                         Aligned(cache.v, 16) && Aligned(bias, 16);
  LaunchWithPdl(PdlKernel::kRope, runs_of_8 ? RopeKvWriteKernel<T, 8> : RopeKvWriteKernel<T, 1>,
                dim3(static_cast<unsigned>(rows), head_groups), dim3(kThreads), 0, stream,
                static_cast<const T*>(qkv), bias, positions, inv_freq, freq_index, slot_block, slot_offset,
                static_cast<int>(q_heads), static_cast<int>(kv_heads), static_cast<int>(head_dim), heads_per_cta,
                static_cast<T*>(q_out), static_cast<T*>(cache.k), static_cast<T*>(cache.v), cache.block_size);
}

}  // namespace

void LaunchRopeKvWrite(cudaStream_t stream, ElemType type, const void* qkv, const float* bias,
                       const int32_t* positions, const float* inv_freq, const int32_t* freq_index,
                       const int32_t* slot_block, const int32_t* slot_offset, int64_t rows, int64_t q_heads,
                       int64_t kv_heads, int64_t head_dim, void* q_out, KvLayer cache) {
  if (rows <= 0) return;
  if (head_dim % 2 != 0 || head_dim / 2 > kMaxHalf) {
    throw std::runtime_error("rope_kv_write: head_dim " + std::to_string(head_dim) + " must be even and <= 512");
  }
  TG_DISPATCH_HALF(type, Launch, stream, qkv, bias, positions, inv_freq, freq_index, slot_block, slot_offset, rows,
                   q_heads, kv_heads, head_dim, q_out, cache);
  TG_CUDA_CHECK_LAUNCH("rope_kv_write");
}

}  // namespace cuda
}  // namespace tg
