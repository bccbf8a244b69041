// Prefill attention on tensor cores, FlashAttention-2 style, over the paged KV cache.
//
// One CTA (4 warps) takes one work item, kBlockM = 64 or 128 consecutive query rows
// of one sequence, for one query head. It walks the keys the rows can see in tiles
// of kBlockN = 64, gathered through the block table with cp.async into shared memory
// (two buffers each for K and V, K and V in separate commit groups, so the next
// tile's K loads during this tile's softmax and P·V, and the next V during the next
// S = Q·Kᵀ). Each warp owns 16 (kMTiles = 1) or 32 (kMTiles = 2) query rows: S and
// O live in registers as mma.sync m16n8k16 accumulators (f32), the softmax is online
// (running max and sum per row, f32, exp2 of pre-scaled scores), and P is rounded to
// the input type to feed the P·V mma as its A operand straight from the S registers.
// Fragments come from shared memory through ldmatrix (.trans for V, whose rows are
// keys while the mma wants them as the k dimension). In shared memory the 16-byte
// chunks of row r are XOR-swizzled by r % 8 (LaneRel), so ldmatrix's eight row
// reads of one chunk column, cp.async's writes and the output staging hit distinct
// banks without padding (which keeps the 128-row d-128 CTA at 96 KiB: two per H100
// SM, and one fits the 99 KiB of sm_86/sm_89).
//
// Fragment layouts used below (PTX ISA, mma.m16n8k16 with .row.col, 16-bit inputs),
// with g = lane / 4 and t = lane % 4:
//   A (16x16, row-major) a0: (g, 2t..2t+1)  a1: (g+8, 2t..)  a2: (g, 2t+8..)  a3: (g+8, 2t+8..)
//   B (16x8, k x n)      b0: (k 2t..2t+1, n g)  b1: (k 2t+8.., n g)
//   C (16x8, f32)        c0, c1: (g, 2t), (g, 2t+1)  c2, c3: (g+8, 2t), (g+8, 2t+1)
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i; register i of
// lane l holds row l/4, columns 2(l%4)..+1 of matrix i (with .trans: column l/4,
// rows 2(l%4)..+1), lower column (row) in the low half.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/prefill_attention.h"
#include "backend/cuda/prefill_attention_wgmma.h"

namespace tg {
namespace cuda {
namespace {

using namespace mma;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockN = 64;  // keys per K/V tile

// Shared-memory tiles hold rows of D 16-bit elements (D * 2 bytes, a multiple of 128),
// 16-byte chunk c of row r stored at chunk c ^ (r % 8) (D >= 64: at least 8 chunks).
// Addresses are split so that unrolled loops only add constants: a lane's part,
// LaneRel (its row inside the fragment and its XOR term), is computed once, and
// ChunkAddr adds a fragment's first row (a multiple of 8, so r % 8 is the lane's) and
// first chunk, whose low three bits XOR into the lane's term. A lane that adds a chunk
// of its own (lane_chunk 1) needs chunk0 even, so that chunk0 + 1 == chunk0 ^ 1.
template <int D>
__device__ __forceinline__ uint32_t LaneRel(int lane_row, int lane_chunk) {
  return static_cast<uint32_t>(lane_row * D * 2 + ((lane_chunk ^ (lane_row & 7)) << 4));
}
template <int D>
__device__ __forceinline__ uint32_t ChunkAddr(uint32_t tile, uint32_t lane_rel, int row0, int chunk0) {
  return tile + static_cast<uint32_t>(row0 * D * 2 + ((chunk0 & ~7) << 4)) + (lane_rel ^ ((chunk0 & 7) << 4));
}

// CTAs per SM the kernel is compiled for (registers <= 65536 / (128 · this)): shared
// memory allows two of the d-128 tiles (80 and 96 KiB) per H100 SM; the 40 KiB of
// d 64 with 64 rows fits in 128 registers without spills, so four.
template <int D, int kMTiles>
constexpr int MinBlocks() { return D == 64 && kMTiles == 1 ? 4 : 2; }

template <typename T, int D, int kMTiles>
__global__ void __launch_bounds__(kThreads, MinBlocks<D, kMTiles>())
    PrefillAttentionKernel(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                           PrefillBatch batch, PrefillShape sh, T* __restrict__ out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // mma.sync with bf16 and cp.async need sm_80
#else
  constexpr int kRowsPerWarp = 16 * kMTiles;
  constexpr int kBlockM = kWarps * kRowsPerWarp;
  constexpr int kKSteps = D / 16;       // k steps of S = Q·Kᵀ over the head dim
  constexpr int kNTiles = kBlockN / 8;  // 8-key column tiles of S
  constexpr int kDTiles = D / 8;        // 8-dim column tiles of O
  constexpr int kChunks = D / 8;        // 16-byte chunks per row
  constexpr int kRowGroups = kThreads / kChunks;
  constexpr bool kQInRegs = kMTiles == 1;  // 16 rows: Q fragments fit in registers beside S and O
  static_assert(kThreads % kChunks == 0 && kBlockN % kRowGroups == 0 && kBlockM % kRowGroups == 0, "copy shape");

  static_assert(sizeof(T) == 2 && D % 64 == 0, "16-bit elements, rows of whole 128-byte lines");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  constexpr uint32_t kTileBytes = kBlockN * D * 2;
  const uint32_t q_s = SmemAddr(smem_raw);       // [kBlockM][D], later the output staging
  const uint32_t k_s = q_s + kBlockM * D * 2;    // [2][kBlockN][D]
  const uint32_t v_s = k_s + 2 * kTileBytes;     // [2][kBlockN][D]

  const int head = blockIdx.x, item = blockIdx.y;
  const int seq = batch.items[2 * item], r0 = batch.items[2 * item + 1];
  const int row_start = batch.seq_row_start[seq], position = batch.seq_position[seq];
  const int rows_here = min(kBlockM, batch.seq_rows[seq] - r0);  // >= 1: items start inside the sequence
  const int32_t* blocks = batch.block_tables + batch.seq_block_start[seq];
  const int kvh = head / sh.group;
  // Keys any row of the item sees: [key_begin, key_end), never empty (each row sees itself).
  const int key_begin = sh.window > 0 ? max(0, position + r0 - sh.window + 1) : 0;
  const int key_end = position + r0 + rows_here;
  const int num_tiles = (key_end - key_begin + kBlockN - 1) / kBlockN;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  // Copies between global and shared memory: each thread moves one stored chunk
  // position of a set of rows; the element chunk there is chunk ^ (row % 8).
  const int chunk = tid % kChunks, row_group = tid / kChunks;

  // Q rows of the item (zeros past its last row): rows row_group + i · kRowGroups.
  {
    const int64_t pitch = static_cast<int64_t>(sh.q_heads) * D;
    const T* src = q + (static_cast<int64_t>(row_start + r0) * sh.q_heads + head) * D;
#pragma unroll
    for (int i = 0; i < kBlockM / kRowGroups; ++i) {
      const int r = row_group + i * kRowGroups;
      const bool valid = r < rows_here;
      CpAsync16(q_s + (r * kChunks + chunk) * 16, valid ? src + r * pitch + ((chunk ^ (r & 7)) << 3) : q, valid);
    }
  }
  // Keys [start, start + kBlockN) of K or V into the tile at `dst`: each thread takes
  // kBlockN / kRowGroups consecutive keys, so one division finds its first block and
  // slot. Keys at or past key_end are zero-filled: their scores are masked, and zero V
  // rows keep 0 · V finite.
  const int64_t block_pitch = static_cast<int64_t>(sh.kv_heads) * sh.block_size * D;
  const int64_t head_offset = static_cast<int64_t>(kvh) * sh.block_size * D;
  auto load_tile = [&](const T* cache, uint32_t dst, int start) {
    constexpr int kKeysPerThread = kBlockN / kRowGroups;
    const int first = row_group * kKeysPerThread;
    int p = start + first;
    int block = p / sh.block_size, slot = p - block * sh.block_size;
#pragma unroll
    for (int i = 0; i < kKeysPerThread; ++i, ++p) {
      const int r = first + i;
      const bool valid = p < key_end;
      const T* src = valid ? cache + blocks[block] * block_pitch + head_offset + slot * D + ((chunk ^ (r & 7)) << 3)
                           : cache;
      CpAsync16(dst + (r * kChunks + chunk) * 16, src, valid);
      if (++slot == sh.block_size) {
        slot = 0;
        ++block;
      }
    }
  };
  load_tile(k_cache, k_s, key_begin);
  CpAsyncCommit();  // group: Q and K of tile 0
  load_tile(v_cache, v_s, key_begin);
  CpAsyncCommit();  // group: V of tile 0

  // This warp's rows and the positions of its first and last valid row.
  const int warp_row = warp * kRowsPerWarp;
  const bool warp_has_rows = warp_row < rows_here;
  const int qp_first = position + r0 + warp_row;
  const int qp_last = position + r0 + min(warp_row + kRowsPerWarp, rows_here) - 1;
  const int g = lane >> 2, t4 = lane & 3;
  // ldmatrix row and chunk of this lane inside a fragment (see the layouts at the top):
  // Q as A (matrices: rows 0-7 | 8-15 at chunk 0, then at chunk 1);
  const uint32_t a_rel = LaneRel<D>(lane & 15, lane >> 4);
  // K as B of two n tiles (keys 0-7 at chunk 0 | chunk 1, then keys 8-15 likewise);
  const uint32_t kb_rel = LaneRel<D>((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
  // V (transposed) as B of two d tiles (keys 0-7 | 8-15 at chunk 0, then at chunk 1).
  const uint32_t vb_rel = LaneRel<D>((lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4);

  float o[kMTiles][kDTiles][4];
  float row_max[kMTiles][2], row_sum[kMTiles][2];  // [m tile][row g | row g + 8]; sums are per-lane partials
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[m][h] = -INFINITY;
      row_sum[m][h] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[m][j][e] = 0.0f;
    }
  }
  uint32_t q_frag[kQInRegs ? kKSteps : 1][4];

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int buf = tile & 1;
    const int start = key_begin + tile * kBlockN;
    const uint32_t k_tile = k_s + buf * kTileBytes, v_tile = v_s + buf * kTileBytes;

    CpAsyncWait<1>();  // this thread's Q/K copies for this tile are done (V may still be in flight)
    __syncthreads();   // everyone's are, and every warp has finished S of tile - 1 (the other K buffer)
    if (tile + 1 < num_tiles) load_tile(k_cache, k_s + (buf ^ 1) * kTileBytes, start + kBlockN);
    CpAsyncCommit();  // possibly empty: keeps one group per K and per V for the waits' counting

    if constexpr (kQInRegs) {
      if (tile == 0) {
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
          Ldmatrix4(ChunkAddr<D>(q_s, a_rel, warp_row, 2 * ks), q_frag[ks]);
        }
      }
    }

    // Whether any of the warp's rows sees a key of this tile (warp-uniform); the
    // diagonal tiles of early warps and, with a window, tiles before the window skip the math.
    const bool active = warp_has_rows && start <= qp_last &&
                        !(sh.window > 0 && start + kBlockN - 1 <= qp_first - sh.window);
    // P of this tile in the input type, as A fragments of the P·V mma: the C layout of S's
    // n tiles 2kk and 2kk + 1 is the A layout of keys 16kk..16kk + 15. Packed before the
    // barrier below so only half of S's registers stay live across it.
    uint32_t p[kMTiles][kBlockN / 16][4];
    if (active) {
      float s[kMTiles][kNTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[m][n][e] = 0.0f;
        }
      }
      // S = Q·Kᵀ.
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        uint32_t a[kMTiles][4];
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          if constexpr (kQInRegs) {
#pragma unroll
            for (int e = 0; e < 4; ++e) a[m][e] = q_frag[ks][e];
          } else {
            Ldmatrix4(ChunkAddr<D>(q_s, a_rel, warp_row + 16 * m, 2 * ks), a[m]);
          }
        }
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
          uint32_t b[4];
          Ldmatrix4(ChunkAddr<D>(k_tile, kb_rel, np * 16, 2 * ks), b);
#pragma unroll
          for (int m = 0; m < kMTiles; ++m) {
            Mma<T>(s[m][2 * np], a[m], b[0], b[1]);
            Mma<T>(s[m][2 * np + 1], a[m], b[2], b[3]);
          }
        }
      }
      // Scale into the exp2 domain; mask keys past a row's position or before its window
      // (and the zero-filled keys past key_end, which are past every row's position).
      const bool need_mask = start + kBlockN - 1 > qp_first || (sh.window > 0 && start <= qp_last - sh.window);
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float v = s[m][n][e] * sh.scale_log2;
            if (need_mask) {
              const int qp = qp_first + 16 * m + g + 8 * (e >> 1);
              const int key = start + 8 * n + 2 * t4 + (e & 1);
              const bool visible = key <= qp && (sh.window <= 0 || key > qp - sh.window);
              v = visible ? v : -INFINITY;
            }
            s[m][n][e] = v;
          }
        }
      }
      // Online softmax per row: the quad of lanes 4g..4g+3 holds the row's 64 scores.
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float mx = -INFINITY;
#pragma unroll
          for (int n = 0; n < kNTiles; ++n) mx = fmaxf(mx, fmaxf(s[m][n][2 * h], s[m][n][2 * h + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float new_max = fmaxf(row_max[m][h], mx);
          // A row that has seen no visible key yet keeps max -inf; subtracting 0 then
          // gives exp2(-inf) = 0 for its scores and its (zero) history instead of NaN.
          const float base = new_max == -INFINITY ? 0.0f : new_max;
          const float alpha = Exp2(row_max[m][h] - base);
          row_max[m][h] = new_max;
          float sum = 0.0f;
#pragma unroll
          for (int n = 0; n < kNTiles; ++n) {
            s[m][n][2 * h] = Exp2(s[m][n][2 * h] - base);
            s[m][n][2 * h + 1] = Exp2(s[m][n][2 * h + 1] - base);
            sum += s[m][n][2 * h] + s[m][n][2 * h + 1];
          }
          row_sum[m][h] = row_sum[m][h] * alpha + sum;
#pragma unroll
          for (int j = 0; j < kDTiles; ++j) {
            o[m][j][2 * h] *= alpha;
            o[m][j][2 * h + 1] *= alpha;
          }
        }
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          p[m][kk][0] = Pack2<T>(s[m][2 * kk][0], s[m][2 * kk][1]);
          p[m][kk][1] = Pack2<T>(s[m][2 * kk][2], s[m][2 * kk][3]);
          p[m][kk][2] = Pack2<T>(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
          p[m][kk][3] = Pack2<T>(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
        }
      }
    }

    CpAsyncWait<1>();  // this thread's V copies for this tile are done (next K may be in flight)
    __syncthreads();   // everyone's are, and every warp has finished P·V of tile - 1 (the other V buffer)
    if (tile + 1 < num_tiles) load_tile(v_cache, v_s + (buf ^ 1) * kTileBytes, start + kBlockN);
    CpAsyncCommit();

    if (active) {
      // O += P·V.
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
#pragma unroll
        for (int dp = 0; dp < kDTiles / 2; ++dp) {
          uint32_t b[4];
          Ldmatrix4Trans(ChunkAddr<D>(v_tile, vb_rel, kk * 16, 2 * dp), b);
#pragma unroll
          for (int m = 0; m < kMTiles; ++m) {
            Mma<T>(o[m][2 * dp], p[m][kk], b[0], b[1]);
            Mma<T>(o[m][2 * dp + 1], p[m][kk], b[2], b[3]);
          }
        }
      }
    }
  }

  // O / l, staged through the warp's own Q rows (no other warp reads them, and no copy
  // into them is in flight: Q's group completed before tile 0), then 16-byte stores.
  if (!warp_has_rows) return;
  __syncwarp();  // order the warp's last ldmatrix reads of its Q rows before the staging writes
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = row_sum[m][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // l > 0 for every valid row (it sees its own key)
      // Row g (+ 8h) of the m tile, dims 8j + 2t4 and + 1: chunk j, bytes 4t4.. of it.
      const uint32_t rel = LaneRel<D>(g, 0) + 4 * t4;
#pragma unroll
      for (int j = 0; j < kDTiles; ++j) {
        *reinterpret_cast<uint32_t*>(smem_raw + ChunkAddr<D>(0, rel, warp_row + 16 * m + 8 * h, j)) =
            Pack2<T>(o[m][j][2 * h] * inv, o[m][j][2 * h + 1] * inv);
      }
    }
  }
  __syncwarp();
  const int64_t pitch = static_cast<int64_t>(sh.q_heads) * D;
  T* dst = out + (static_cast<int64_t>(row_start + r0) * sh.q_heads + head) * D;
#pragma unroll
  for (int idx = lane; idx < kRowsPerWarp * kChunks; idx += 32) {
    const int r = warp_row + idx / kChunks, c = idx % kChunks;  // stored chunk c holds dims of chunk c ^ (r % 8)
    if (r < rows_here) {
      const uint4 v = *reinterpret_cast<const uint4*>(smem_raw + (r * kChunks + c) * 16);
      *reinterpret_cast<uint4*>(dst + r * pitch + ((c ^ (r & 7)) << 3)) = v;
    }
  }
#endif
}

template <typename T, int D, int kMTiles>
void LaunchTile(cudaStream_t stream, const void* q, KvLayer cache, const PrefillBatch& batch, PrefillShape sh,
                void* out) {
  constexpr int kBlockM = kWarps * 16 * kMTiles;
  constexpr size_t kSmem = sizeof(T) * (kBlockM + 4 * kBlockN) * D;
  auto kernel = PrefillAttentionKernel<T, D, kMTiles>;
  // Past the default 48 KiB; the opt-in is per kernel and cheap to repeat. Two CTAs of
  // up to 96 KiB per SM need the largest shared-memory carveout.
  TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem)));
  TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                     cudaSharedmemCarveoutMaxShared));
  // Query heads fastest: the heads sharing a KV head run side by side and share its
  // tiles in L2, and items (longest first) start in order.
  const dim3 grid(static_cast<unsigned>(sh.q_heads), static_cast<unsigned>(batch.num_items));
  kernel<<<grid, kThreads, kSmem, stream>>>(static_cast<const T*>(q), static_cast<const T*>(cache.k),
                                            static_cast<const T*>(cache.v), batch, sh, static_cast<T*>(out));
}

template <typename T>
void Launch(cudaStream_t stream, const void* q, KvLayer cache, const PrefillBatch& batch, int64_t head_dim,
            PrefillShape sh, void* out) {
  // kMTiles = tile rows / 64: each of the 4 warps owns 16 · kMTiles rows.
  const bool large = batch.tile_rows == kPrefillTileRowsLarge;
  if (head_dim == 128) {
    if (large) LaunchTile<T, 128, 2>(stream, q, cache, batch, sh, out);
    else LaunchTile<T, 128, 1>(stream, q, cache, batch, sh, out);
  } else {
    if (large) LaunchTile<T, 64, 2>(stream, q, cache, batch, sh, out);
    else LaunchTile<T, 64, 1>(stream, q, cache, batch, sh, out);
  }
}

}  // namespace

bool PrefillAttentionSupports(int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

bool PrefillUsesWgmma(int64_t head_dim, int64_t block_size, int tile_rows, PrefillKernel kernel) {
  static const bool allowed = SwitchedOn("TEXT_GEN_PREFILL_WGMMA");
  return kernel == PrefillKernel::kBest && allowed && PrefillWgmmaTakes(head_dim, block_size, tile_rows);
}

void LaunchPrefillAttention(cudaStream_t stream, ElemType type, const void* q, KvLayer cache,
                            const PrefillBatch& batch, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                            int64_t window, float scale, void* out, PrefillKernel kernel) {
  if (batch.num_items <= 0) return;
  if (!PrefillAttentionSupports(head_dim)) {
    throw std::runtime_error("prefill_attention: head_dim " + std::to_string(head_dim) +
                             " is not supported (64 or 128); use LaunchPagedAttention");
  }
  if (batch.tile_rows != kPrefillTileRowsLarge && batch.tile_rows != kPrefillTileRowsSmall) {
    throw std::runtime_error("prefill_attention: tile_rows " + std::to_string(batch.tile_rows) + " is not " +
                             std::to_string(kPrefillTileRowsLarge) + " or " + std::to_string(kPrefillTileRowsSmall));
  }
  if (kv_heads <= 0 || q_heads % kv_heads != 0 || cache.block_size <= 0) {
    throw std::runtime_error("prefill_attention: q_heads must be a multiple of kv_heads, block_size positive");
  }
  if (batch.num_items > 65535) throw std::runtime_error("prefill_attention: more than 65535 work items");
  const PrefillShape sh{static_cast<int>(q_heads), static_cast<int>(kv_heads), static_cast<int>(q_heads / kv_heads),
                 static_cast<int>(cache.block_size), static_cast<int>(window > 0 ? window : 0), scale * kLog2e};
  if (cache.num_blocks > 0 && PrefillUsesWgmma(head_dim, cache.block_size, batch.tile_rows, kernel)) {
    LaunchPrefillAttentionWgmma(stream, type, q, cache, batch, sh, out);
    return;
  }
  TG_DISPATCH_HALF(type, Launch, stream, q, cache, batch, head_dim, sh, out);
  TG_CUDA_CHECK_LAUNCH("prefill_attention");
}

}  // namespace cuda
}  // namespace tg
