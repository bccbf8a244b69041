// Prefill attention on Hopper's warpgroup tensor-core instructions (wgmma, sm_90a), head
// dim 128: the work items, masking and output of prefill_attention.cu's kernel, whose
// mma.sync products peak near 230 TFLOP/s on an H100 (cuda-notes run 35) because every
// warp moves each operand through ldmatrix into registers first.
//
// One CTA takes one item, 128 query rows of one sequence, for one query head: two
// consumer warpgroups (warpgroup w owns rows 64w..64w+63) and a producer warp (alone in
// its warpgroup, which hands most of its registers to the consumers: setmaxnreg). The
// producer streams K and V in 128-key tiles, two buffers each, by bulk tensor copies
// (tma.cuh; one box per block of the table and 64-dim half, laid out as wgmma.cuh's
// 128-byte swizzle atoms), each buffer with a "full" barrier the copy engine completes
// and an "empty" one the consumers' warps arrive at once their products read it. So no
// barrier ties the two warpgroups together after the start: each runs at its own pace,
// and one's softmax overlaps the other's products (with a CTA-wide barrier per tile the
// kernel spent most of its stalls waiting at it: cuda-notes, session 7). Per tile a
// warpgroup issues S = Q·Kᵀ as 8 m64n128k16 wgmma's with both operands in shared memory,
// then O += P·V of the previous tile as 8 more, with P from registers (the accumulator
// layout of S is the A-fragment layout P needs) and V read transposed, and takes the
// online softmax of S (f32, exp2) while that second product runs: a score costs the
// tensor cores 512 FLOPs and the special-function units one exp2, at about 1/250 of their
// FLOP rate, so unhidden the exp2's would add half again. S and O are 64 f32 registers
// each per thread, P 32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/per_device.h"
#include "backend/cuda/prefill_attention_wgmma.h"
#include "backend/cuda/tensor_map.h"
#include "backend/cuda/tma.cuh"
#include "backend/cuda/wgmma.cuh"

namespace tg {
namespace cuda {
namespace {

using mma::CpAsync16;
using mma::CpAsyncCommit;
using mma::CpAsyncWait;
using mma::Exp2;
using mma::Pack2;
using mma::SmemAddr;
using wgmma::TileOffset;

constexpr int kD = 128;
constexpr int kChunks = kD / 8;                 // 16-byte chunks per row
constexpr int kBlockM = 128;                    // query rows per CTA: kPrefillTileRowsLarge
constexpr int kBlockN = 128;                    // keys per K/V tile
constexpr int kConsumerThreads = 256;            // two warpgroups
constexpr int kThreads = kConsumerThreads + 128;  // and the producer's: registers come per warpgroup
constexpr int kProducerWarp = kConsumerThreads / 32;
// Registers per thread after setmaxnreg (the launch bound caps all at 65536 / 384 = 168):
// the consumers' S, O and P need about 200 without spilling, the producer little.
constexpr int kConsumerRegisters = 232;
constexpr int kProducerRegisters = 40;
static_assert(2 * 128 * kConsumerRegisters + 128 * kProducerRegisters <= 65536, "register file");
constexpr uint32_t kQBytes = kBlockM * kD * 2;
constexpr uint32_t kTileBytes = kBlockN * kD * 2;
constexpr uint32_t kHalfBytes = kBlockN * 128;  // one 64-dim half of a tile
// Barriers (8 bytes each): full and empty for each of the two K and two V buffers.
constexpr int kBarriers = 8;
// Swizzle atoms need 1,024-byte alignment, which the dynamic shared memory's start may lack.
constexpr size_t kSmemBytes = wgmma::kAtomBytes + kQBytes + 4 * kTileBytes + 8 * kBarriers;
static_assert(kBlockM == kPrefillTileRowsLarge, "one CTA per large item");

// Shared memory written through the generic proxy (cp.async, stores) that the tensor cores
// read next (the async proxy) needs this fence in each writing thread before the barrier.
__device__ __forceinline__ void FenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// A named barrier of `threads` threads (id 0 is __syncthreads').
__device__ __forceinline__ void NamedBarrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// K and V come by bulk tensor copies through k_map and v_map: the caches as rows of 128
// elements, boxes of min(block_size, 128) rows (a power of two >= 8: boxes start 1,024-byte
// aligned in a tile, and a tile's copies start at a block boundary or at a multiple of 128
// inside a block).
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    PrefillAttentionWgmmaKernel(const T* __restrict__ q, const __grid_constant__ CUtensorMap k_map,
                                const __grid_constant__ CUtensorMap v_map, PrefillBatch batch, PrefillShape sh,
                                T* __restrict__ out) {
#if !defined(TG_WGMMA_BUILT) || !defined(TG_TMA_BUILT)
  __trap();  // launched only where PrefillWgmmaAvailable(): an sm_90a build on compute capability 9.0
#else
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = SmemAddr(smem_raw);
  const uint32_t align = wgmma::AtomAligned(raw) - raw;
  unsigned char* const smem = smem_raw + align;  // generic pointer to q_s
  const uint32_t q_s = raw + align;              // [2 halves][kBlockM][64]
  const uint32_t k_s = q_s + kQBytes;            // [2 buffers][2 halves][kBlockN][64]
  const uint32_t v_s = k_s + 2 * kTileBytes;     // [2 buffers][2 halves][kBlockN][64]
  const uint32_t bar_s = v_s + 2 * kTileBytes;
  auto k_full = [&](int buf) { return bar_s + 8 * buf; };
  auto v_full = [&](int buf) { return bar_s + 16 + 8 * buf; };
  auto k_empty = [&](int buf) { return bar_s + 32 + 8 * buf; };
  auto v_empty = [&](int buf) { return bar_s + 48 + 8 * buf; };

  const int head = blockIdx.x, item = blockIdx.y;
  const int seq = batch.items[2 * item], r0 = batch.items[2 * item + 1];
  const int row_start = batch.seq_row_start[seq], position = batch.seq_position[seq];
  const int rows_here = min(kBlockM, batch.seq_rows[seq] - r0);  // >= 1: items start inside the sequence
  const int kvh = head / sh.group;
  // Keys any row of the item sees: [key_begin, key_end), never empty (each row sees itself).
  // Tiles start at key_begin rounded down to a tile (the extra keys fall outside the window).
  const int key_begin = sh.window > 0 ? max(0, position + r0 - sh.window + 1) : 0;
  const int key_first = key_begin & ~(kBlockN - 1);
  const int key_end = position + r0 + rows_here;
  const int num_tiles = (key_end - key_first + kBlockN - 1) / kBlockN;

  const int tid = threadIdx.x;
  // Warp-uniform in the compiler's eyes too (a shuffle's result): ptxas serialises wgmma's
  // under a branch it cannot prove uniform (C7520).
  const int warp_id = __shfl_sync(0xffffffffu, tid / 32, 0);
  if (tid == 0) {
    // Full: the producer's one arrival and the bytes. Empty: one arrival per consumer warp.
    for (int b = 0; b < 4; ++b) tma::BarrierInit(bar_s + 8 * b, 1);
    for (int b = 4; b < kBarriers; ++b) tma::BarrierInit(bar_s + 8 * b, kConsumerThreads / 32);
    tma::FenceBarrierInit();
  }
  __syncthreads();

  if (warp_id >= kProducerWarp) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegisters));
    if (warp_id != kProducerWarp) return;
    // Lane i copies keys [i·R, (i + 1)·R) of every tile (R = min(block_size, 128)), both
    // halves; lane 0 also announces each tile's bytes. Keys at or past key_end are not
    // copied: their scores are masked, and the consumers zero the last V tile's rows past
    // key_end before its product.
    const int lane = tid % 32;
    const int box_rows = min(sh.block_size, kBlockN);
    if (lane >= kBlockN / box_rows) return;
    const int32_t* blocks = batch.block_tables + batch.seq_block_start[seq];
    auto tile_bytes = [&](int tile) {
      const int keys = min(kBlockN, key_end - (key_first + tile * kBlockN));
      return static_cast<uint32_t>((keys + box_rows - 1) / box_rows * box_rows * kD * 2);
    };
    auto copy = [&](const CUtensorMap* map, uint32_t dst, int tile, int block_id, uint32_t full) {
      const int key = key_first + tile * kBlockN + lane * box_rows;
      if (lane == 0) tma::ArriveExpectBytes(full, tile_bytes(tile));
      if (key < key_end) {
        const int row = (block_id * sh.kv_heads + kvh) * sh.block_size + key % sh.block_size;
        tma::Load2d(dst + lane * box_rows * 128, map, 0, row, full);
        tma::Load2d(dst + kHalfBytes + lane * box_rows * 128, map, 64, row, full);
      }
    };
    auto block_id_of = [&](int tile) {
      const int key = min(key_first + tile * kBlockN + lane * box_rows, key_end - 1);
      return blocks[key / sh.block_size];
    };
    // Tile t's K goes into buffer t % 2 once both groups' S of tile t - 2 are done with it
    // (the k-th fill of a buffer waits for phase k - 1 of its empty barrier; the first
    // waits for nothing: parity 1 of a fresh barrier counts as complete), its V likewise
    // after P·V of tile t - 2. The consumers finish that product in iteration t - 1, so
    // waiting for it never holds up K of tile t + 1, which they need in iteration t + 1.
    int block_id = block_id_of(0);
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int buf = tile & 1;
      const uint32_t parity = ((tile >> 1) & 1) ^ 1;
      const int next_block_id = tile + 1 < num_tiles ? block_id_of(tile + 1) : 0;
      tma::Wait(k_empty(buf), parity);
      copy(&k_map, k_s + buf * kTileBytes, tile, block_id, k_full(buf));
      tma::Wait(v_empty(buf), parity);
      copy(&v_map, v_s + buf * kTileBytes, tile, block_id, v_full(buf));
      block_id = next_block_id;
    }
    return;
  }

  // The consumers. Q by cp.async: 16 consecutive threads move the 16 chunks of one row.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegisters));
  {
    const int chunk = tid % kChunks, row_group = tid / kChunks;
    constexpr int kRowGroups = kConsumerThreads / kChunks;
    const int64_t pitch = static_cast<int64_t>(sh.q_heads) * kD;
    const T* src = q + (static_cast<int64_t>(row_start + r0) * sh.q_heads + head) * kD + chunk * 8;
#pragma unroll
    for (int i = 0; i < kBlockM / kRowGroups; ++i) {
      const int r = row_group + i * kRowGroups;
      const bool valid = r < rows_here;  // rows past the item's are zeros
      CpAsync16(q_s + TileOffset(kBlockM, r, chunk), valid ? src + r * pitch : q, valid);
    }
    CpAsyncCommit();
    CpAsyncWait<0>();
    FenceProxyAsync();
    NamedBarrier(1, kConsumerThreads);
  }

  // This warpgroup's rows, and this thread's two rows of them (the accumulator layout:
  // warp i of the group holds rows 16i..16i+15, lane 4g + t rows g and g + 8).
  const int warpgroup = warp_id / 4, warp = warp_id % 4, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int group_row = warpgroup * 64;
  const int qp_first = position + r0 + group_row;
  const int qp_last = position + r0 + min(group_row + 64, rows_here) - 1;
  const int qp_mine = position + r0 + group_row + 16 * warp + g;  // and + 8

  // Descriptors: Q (A) and K (B) are K-major, 8-row groups 1,024 bytes apart, k-steps of
  // 16 dims 32 bytes apart inside a 128-byte half row; V (B, transposed) has keys as rows:
  // a k-step is 16 keys (2,048 bytes) and its two 64-dim halves are a tile half apart.
  using wgmma::kAtomBytes;
  auto q_desc = [&](int ks) {
    return wgmma::Descriptor(q_s + (ks / 4) * (kBlockM * 128) + group_row * 128 + (ks % 4) * 32, 16, kAtomBytes);
  };
  auto k_desc = [&](uint32_t tile, int ks) {
    return wgmma::Descriptor(tile + (ks / 4) * kHalfBytes + (ks % 4) * 32, 16, kAtomBytes);
  };
  auto v_desc = [&](uint32_t tile, int kk) { return wgmma::Descriptor(tile + kk * 16 * 128, kHalfBytes, kAtomBytes); };

  float o[16][4], s[16][4];
  uint32_t p[8][4];  // P of the previous tile in the input type: the A fragments of keys 16kk..16kk + 15
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[j][e] = s[j][e] = 0.0f;
  }
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
#pragma unroll
    for (int e = 0; e < 4; ++e) p[kk][e] = 0u;
  }
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};  // rows g, g + 8; sums are per-lane partials

  // Tile t's K (V) is in buffer t % 2 once phase t / 2 of its full barrier completed.
  auto issue_s = [&](int tile) {
    const int buf = tile & 1;
    tma::Wait(k_full(buf), (tile >> 1) & 1);
    const uint32_t k_tile = k_s + buf * kTileBytes;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) wgmma::MmaSS<kBf16>(s, q_desc(ks), k_desc(k_tile, ks), ks > 0);
    wgmma::Commit();
  };
  auto issue_pv = [&](int tile) {
    const uint32_t v_tile = v_s + (tile & 1) * kTileBytes;
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) wgmma::MmaRSTransB<kBf16>(o, p[kk], v_desc(v_tile, kk), true);
    wgmma::Commit();
  };
  // After this warp's products that read a buffer completed: one arrival per warp.
  auto release = [&](uint32_t empty) {
    if (lane == 0) tma::Arrive(empty);
  };
  // The online softmax of S of `tile` in place (row sums and maxima updated), leaving each
  // row's rescale of O in alpha. Only S's registers are touched.
  float alpha[2];
  auto softmax = [&](int tile) {
    const int start = key_first + tile * kBlockN;
    const bool need_mask = start + kBlockN - 1 > qp_first || (sh.window > 0 && start <= qp_last - sh.window);
#pragma unroll
    for (int n = 0; n < 16; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (need_mask) {  // a select, so masked keys past key_end (stale copies) may hold anything
          const int qp = qp_mine + 8 * (e >> 1);
          const int key = start + 8 * n + 2 * t4 + (e & 1);
          const bool visible = key <= qp && (sh.window <= 0 || key > qp - sh.window);
          s[n][e] = visible ? s[n][e] : -INFINITY;
        }
      }
    }
    // The quad of lanes 4g..4g+3 holds a row's 128 scores.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < 16; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // Maxima of the unscaled scores (the scale is positive): each exp2 is then one FFMA
      // and the exp2, score · scale − max · scale.
      const float new_max = fmaxf(row_max[h], mx);
      // A row that has seen no visible key yet keeps max -inf; subtracting 0 then gives
      // exp2(-inf) = 0 for its scores and its (zero) history instead of NaN.
      const float base = new_max == -INFINITY ? 0.0f : new_max * sh.scale_log2;
      alpha[h] = Exp2(row_max[h] * sh.scale_log2 - base);
      row_max[h] = new_max;
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        s[n][2 * h] = Exp2(fmaf(s[n][2 * h], sh.scale_log2, -base));
        s[n][2 * h + 1] = Exp2(fmaf(s[n][2 * h + 1], sh.scale_log2, -base));
        sum += s[n][2 * h] + s[n][2 * h + 1];
      }
      row_sum[h] = row_sum[h] * alpha[h] + sum;
    }
  };
  // O rescaled for the new maxima, and P of the tile packed for its product.
  auto rescale_and_pack = [&] {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
      p[kk][0] = Pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      p[kk][1] = Pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      p[kk][2] = Pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      p[kk][3] = Pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
  };

  // Every wgmma sits outside any data-dependent branch (C7520 again), so both groups run
  // every tile, even one none of their rows sees (a diagonal tile of the first group, rows
  // past the item's end, tiles before a window): masking makes it a no-op. Tile t's S runs
  // beside tile t - 1's P·V, whose tensor-core time the softmax of S hides.
  wgmma::Fence();
  issue_s(0);
  wgmma::Wait<0>();
  release(k_empty(0));
  wgmma::Touch(s);
  softmax(0);
  rescale_and_pack();
  for (int tile = 1; tile < num_tiles; ++tile) {
    wgmma::Fence();
    issue_s(tile);
    tma::Wait(v_full((tile - 1) & 1), ((tile - 1) >> 1) & 1);
    issue_pv(tile - 1);
    wgmma::Wait<1>();  // S (committed first) is done; P·V may still run
    release(k_empty(tile & 1));
    wgmma::Touch(s);
    softmax(tile);
    wgmma::Wait<0>();  // P·V is done: O and P may change
    release(v_empty((tile - 1) & 1));
    wgmma::Touch(o);
    wgmma::Touch(p);
    rescale_and_pack();
  }
  {
    // The last V tile: its rows past key_end hold whatever the cache or the buffer held.
    // Each group zeroes them itself (the two write the same zeros, and neither waits for
    // the other), so that 0 · V stays 0 in its P·V.
    const int last = num_tiles - 1;
    tma::Wait(v_full(last & 1), (last >> 1) & 1);
    const int valid_rows = key_end - (key_first + last * kBlockN);
    unsigned char* v_tile = smem + (v_s - q_s) + (last & 1) * kTileBytes;
    for (int idx = valid_rows * kChunks + tid % 128; idx < kBlockN * kChunks; idx += 128) {
      *reinterpret_cast<uint4*>(v_tile + TileOffset(kBlockN, idx / kChunks, idx % kChunks)) = make_uint4(0, 0, 0, 0);
    }
    FenceProxyAsync();
    NamedBarrier(2 + warpgroup, 128);
    wgmma::Fence();
    issue_pv(last);
    wgmma::Wait<0>();
    wgmma::Touch(o);
  }

  // O / l, staged through the group's own Q rows (only its own wgmma's read them, and all
  // have completed), then 16-byte stores of whole rows.
  if (group_row >= rows_here) return;
  NamedBarrier(2 + warpgroup, 128);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = row_sum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // l > 0 for every valid row (it sees its own key)
    const int row = group_row + 16 * warp + g + 8 * h;
#pragma unroll
    for (int j = 0; j < 16; ++j) {  // dims 8j + 2t4 and + 1: chunk j, bytes 4t4.. of it
      *reinterpret_cast<uint32_t*>(smem + TileOffset(kBlockM, row, j) + 4 * t4) =
          Pack2<T>(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
    }
  }
  NamedBarrier(2 + warpgroup, 128);
  const int64_t pitch = static_cast<int64_t>(sh.q_heads) * kD;
  T* dst = out + (static_cast<int64_t>(row_start + r0) * sh.q_heads + head) * kD;
#pragma unroll
  for (int idx = tid % 128; idx < 64 * kChunks; idx += 128) {
    const int r = group_row + idx / kChunks, c = idx % kChunks;
    if (r < rows_here) {
      *reinterpret_cast<uint4*>(dst + r * pitch + c * 8) =
          *reinterpret_cast<const uint4*>(smem + TileOffset(kBlockM, r, c));
    }
  }
#endif
}

template <typename T>
void Launch(cudaStream_t stream, const void* q, KvLayer cache, const PrefillBatch& batch, const PrefillShape& sh,
            void* out) {
  const uint64_t rows = static_cast<uint64_t>(cache.num_blocks * sh.kv_heads * cache.block_size);
  const uint32_t box_rows = static_cast<uint32_t>(std::min<int64_t>(cache.block_size, kBlockN));
  const CUtensorMap k_map = MakeSwizzled128RowsMap(cache.k, rows, kD, box_rows);
  const CUtensorMap v_map = MakeSwizzled128RowsMap(cache.v, rows, kD, box_rows);
  auto kernel = PrefillAttentionWgmmaKernel<T>;
  TG_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes)));
  // Query heads fastest, as in prefill_attention.cu: heads sharing a KV head share its tiles in L2.
  const dim3 grid(static_cast<unsigned>(sh.q_heads), static_cast<unsigned>(batch.num_items));
  kernel<<<grid, kThreads, kSmemBytes, stream>>>(static_cast<const T*>(q), k_map, v_map, batch, sh,
                                                 static_cast<T*>(out));
}

}  // namespace

bool PrefillWgmmaAvailable() {
#if defined(TG_CUDA_SM90A)
  static PerDeviceFlag runs_sm90a;  // asked for every prefill step
  return runs_sm90a.Get([](int device) {
    int major = 0, minor = 0;
    TG_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    TG_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    return major == 9 && minor == 0;
  });
#else
  return false;
#endif
}

bool PrefillWgmmaTakes(int64_t head_dim, int64_t block_size, int tile_rows) {
  const bool boxes = block_size >= 8 && (block_size & (block_size - 1)) == 0;
  return head_dim == kD && tile_rows == kBlockM && boxes && PrefillWgmmaAvailable();
}

void LaunchPrefillAttentionWgmma(cudaStream_t stream, ElemType type, const void* q, KvLayer cache,
                                 const PrefillBatch& batch, const PrefillShape& sh, void* out) {
  if (!PrefillWgmmaTakes(kD, cache.block_size, batch.tile_rows) || cache.num_blocks <= 0) {
    throw std::runtime_error("prefill_attention_wgmma: needs sm_90a code on an sm_90 GPU, tile_rows " +
                             std::to_string(kBlockM) + ", blocks of a power of two >= 8 keys and the cache's "
                             "num_blocks (got tile_rows " + std::to_string(batch.tile_rows) + ", block_size " +
                             std::to_string(cache.block_size) + ", num_blocks " +
                             std::to_string(cache.num_blocks) + ")");
  }
  TG_DISPATCH_HALF(type, Launch, stream, q, cache, batch, sh, out);
  TG_CUDA_CHECK_LAUNCH("prefill_attention_wgmma");
}

}  // namespace cuda
}  // namespace tg
