// See gemv.h. One CTA owns 16 rows of W and its warps split k between them; each
// lane streams 16-byte pieces of two W rows and multiplies them on the tensor cores
// (mma.m16n8k16: W's 16 rows are the M side, x's rows the N side, 8 per mma, so up to
// 16 rows take two), so there are no per-element conversions or FMAs, and x needs no
// reuse trick: every piece of x a CTA loads is used exactly once, for 16 rows of W at a time.
//
// The k permutation that makes plain 16-byte loads feed the mma: a dot product may
// visit k in any order as long as W and x visit it in the same order. Lane (g, t)
// (g = lane / 4, t = lane % 4) loads the same 8-element piece p of W row g, W row
// g + 8 and x row g; the mma's fragment layout puts k {2t, 2t+1, 2t+8, 2t+9} of a
// row in lane (·, t), so the first mma reads elements 0..3 of p as those k and the
// second mma elements 4..7. Every x and W element meets its partner exactly once.
#include "backend/cuda/gemv.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/peer/peer_wait.cuh"
#include "backend/cuda/rope.cuh"

namespace tg {
namespace cuda {
namespace {

constexpr int kTileRows = 16;  // W rows per CTA: the M of mma.m16n8k16
constexpr int kMaxWarps = 8;   // warps per CTA, splitting k between them
// k-steps (32 elements: one mma pair) a warp loads before it multiplies: 2·kStepsPerLoad
// 16-byte W loads in flight per lane, ~64 KB per SM at two CTAs, enough to cover HBM latency.
constexpr int kStepsPerLoad = 4;

// W is read once per step and never by anyone else: keep it out of L1 (it would only
// evict x) and let L2 fetch whole 256-byte blocks, which the next loads of the row use.
// Not volatile: the load has no side effects, so the compiler may schedule it freely.
__device__ __forceinline__ uint4 LoadStreaming(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// c += A (16 × 16, rows of W) · B (16 × 8, columns are rows of x), f32 accumulation.
template <typename T>
__device__ __forceinline__ void Mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// One 8-element piece of k: `lo` from W row g, `hi` from W row g + 8, `xv` from x row g.
// Register j of a piece holds elements 2j, 2j+1 (low half first), as the fragments want.
template <typename T>
__device__ __forceinline__ void MmaPiece(float (&c0)[4], float (&c1)[4], const uint4& lo, const uint4& hi,
                                         const uint4& xv) {
  Mma<T>(c0, lo.x, hi.x, lo.y, hi.y, xv.x, xv.y);  // elements 0..3 as k {2t, 2t+1, 2t+8, 2t+9}
  Mma<T>(c1, lo.z, hi.z, lo.w, hi.w, xv.z, xv.w);  // elements 4..7, the same k in a second mma
}

// GemvExchange's mailboxes: 8-byte lines {product bits, call number}, [source rank][call parity]
// [CTA][kGemvMaxRows · kTileRows outputs] in each rank's region. Two parities: a source writes
// call c + 2 over call c only after its own call c + 1 took this rank's c + 1 products, which
// this rank sent after its call c had read everything. A reader takes a line only when it
// carries its call's number, then zeroes it; no call is numbered 0, so a line left from an
// earlier call is never taken.
constexpr int kExchangeLines = static_cast<int>(kGemvMaxRows) * kTileRows;

__device__ __forceinline__ uint2* ExchangeLine(const GemvExchange& e, int region, int source, uint32_t call,
                                               unsigned tile, int j) {
  const size_t slot = static_cast<size_t>(source) * 2 + (call & 1u);
  return reinterpret_cast<uint2*>(e.mailboxes[region]) + (slot * e.max_ctas + tile) * kExchangeLines + j;
}

// This tile's call number: one more than its last, skipping 0 where the count wraps (the step
// from 2^32 - 1 to 2 keeps the parity alternating).
__device__ __forceinline__ uint32_t ExchangeCall(const GemvExchange& e, unsigned tile) {
  const uint32_t next = e.counters[tile] + 1;
  return next == 0 ? 2 : next;
}

// This rank's product of output j, into every peer's mailbox. It never waits: a CTA sends all of
// its tiles' products before it polls for any of its twins' (ReceivedSum), so one tile's wait
// overlaps the next tile's loads.
__device__ __forceinline__ void SendProduct(const GemvExchange& e, uint32_t call, unsigned tile, int j, float mine) {
  for (int p = 0; p < e.world_size; ++p) {
    if (p == e.rank) continue;
    asm volatile("st.volatile.global.v2.u32 [%0], {%1, %2};" ::"l"(ExchangeLine(e, p, e.rank, call, tile, j)),
                 "r"(__float_as_uint(mine)), "r"(call)
                 : "memory");
  }
}

// Output j's product summed over the ranks in rank order (every rank gets the same bits): this
// rank's `mine` and each peer's, polled from this rank's mailbox.
__device__ float ReceivedSum(const GemvExchange& e, uint32_t call, unsigned tile, int j, float mine) {
  float sum = 0.0f;
  for (int r = 0; r < e.world_size; ++r) {
    float v = mine;
    if (r != e.rank) {
      uint2* line = ExchangeLine(e, e.rank, r, call, tile, j);
      const unsigned long long start = GlobalTimerNs();
      uint2 got;
      for (;;) {
        asm volatile("ld.volatile.global.v2.u32 {%0, %1}, [%2];" : "=r"(got.x), "=r"(got.y) : "l"(line) : "memory");
        if (got.y == call) break;
        if (GlobalTimerNs() - start > kPeerWaitLimitNs) {
          printf("text-gen: rank %d waited %llu s for rank %d's GEMV products; stopping\n", e.rank,
                 kPeerWaitLimitNs / 1000000000ull, r);
          __trap();
        }
      }
      *line = make_uint2(0u, 0u);
      v = __uint_as_float(got.x);
    }
    sum = r == 0 ? v : sum + v;
  }
  return sum;
}

template <typename OutT>
__device__ __forceinline__ OutT FromAccumulator(float v) {
  if constexpr (std::is_same_v<OutT, float>) {
    return v;
  } else if constexpr (std::is_same_v<OutT, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

// GemvOutput::kRopeKvWrite's epilogue: what rope_kv_write.cu does with the stored product
// (bias, rotation, cache slots). row_sum(r, col) is the CTA's sum of tile row r for x row col;
// a rotated CTA's tile rows r and r + 8 are dims i and i + half of `head` (i from rope_first),
// a v CTA's 16 rows start at rope_first.
template <typename T, typename RowSum>
__device__ __forceinline__ void StoreRopeKv(const GemvRopeKv& rope, RowSum row_sum, int m, bool rotated, int head,
                                            int64_t rope_first, int64_t rot_ctas) {
  const int head_dim = rope.head_dim, half = head_dim / 2;
  auto slot = [&](int col, int kv_head) {
    return KvSlot(rope.slot_block[col], rope.slot_offset[col], kv_head, rope.kv_heads, rope.block_size, head_dim);
  };
  auto stored = [&](int r, int col, int64_t row) {
    return ToFloat(FromFloat<T>(row_sum(r, col))) + (rope.bias ? rope.bias[row] : 0.0f);
  };
  if (rotated) {
    for (int j = threadIdx.x; j < 8 * m; j += blockDim.x) {
      const int col = j >> 3, r = j & 7;
      const int64_t row = rope_first + r;
      const int i = static_cast<int>(row - static_cast<int64_t>(head) * head_dim);  // dim within the first half
      float c, s, lo, hi;
      RopeCosSin(static_cast<float>(rope.positions[col]), rope.inv_freq[i], &c, &s);
      RopeRotate(stored(r, col, row), stored(r + 8, col, row + half), c, s, &lo, &hi);
      T* dst = head < rope.q_heads
                   ? static_cast<T*>(rope.q_out) + static_cast<int64_t>(col) * rope.q_heads * head_dim + row
                   : static_cast<T*>(rope.k_cache) + slot(col, head - rope.q_heads) + i;
      dst[0] = FromFloat<T>(lo);
      dst[half] = FromFloat<T>(hi);
    }
    return;
  }
  for (int j = threadIdx.x; j < 16 * m; j += blockDim.x) {
    const int col = j >> 4, r = j & 15;
    const int64_t row = rope_first + r, v_dim = row - rot_ctas * 16;  // within the v heads
    const int v_head = static_cast<int>(v_dim / head_dim), i = static_cast<int>(v_dim % head_dim);
    static_cast<T*>(rope.v_cache)[slot(col, v_head) + i] = FromFloat<T>(stored(r, col, row));
  }
}

// An exchanging tile's products between the two halves of its exchange (GemvKernel): this rank's,
// in shared memory, and the call they were sent under.
struct ExchangeStash {
  float products[kTileRows * kGemvMaxRows];
  uint32_t call;
};

// The adding GEMV's epilogue for tile `tile` of `tiles`: out += product(r, col, j) for each of its
// outputs (tile row r, x row col, j = col·16 + r), then, when feeding a norm (GemvNorm), h ⊙ weight
// and the tile's sum of h² for each x row: an x row's 16 outputs are one half-warp's, summed by shuffles.
template <typename T, typename Product>
__device__ __forceinline__ void AddFeedingNorm(const GemvNorm& norm, float* __restrict__ out, int m, int64_t n,
                                               unsigned tile, unsigned tiles, Product product) {
  const int lane = threadIdx.x & 31;
  const int64_t first_row = static_cast<int64_t>(tile) * kTileRows, parts = tiles;
  const bool feeds = norm.weight != nullptr;
  for (int base = threadIdx.x - lane; base < kTileRows * m; base += blockDim.x) {
    const int j = base + lane, col = j >> 4, r = j & 15;
    const int64_t row = first_row + r;
    float square = 0.0f;
    if (j < kTileRows * m && row < n) {
      // The norm's weight through the read-only path, issued with the residual's load: a plain
      // load would wait for the store to `out` (which, for all the compiler knows, it may alias),
      // one more memory round trip at the kernel's tail.
      const float weight = feeds ? __ldg(norm.weight + row) : 0.0f;
      const float h = out[col * n + row] + product(r, col, j);
      out[col * n + row] = h;
      if (feeds) static_cast<T*>(norm.scaled)[col * n + row] = FromFloat<T>(h * weight);
      square = h * h;
    }
    if (feeds) {
      for (int o = 8; o > 0; o >>= 1) square += __shfl_xor_sync(0xffffffffu, square, o);
      if (r == 0 && j < kTileRows * m) norm.sum_squares[col * parts + tile] = square;
    }
  }
}

// One tile of GemvKernel: 16 rows of W (8 outputs for SiLU of halves), tile `tile` of `tiles`.
// blockDim.x = 32 × warps, warps ≤ kMaxWarps.
// kSiluInput: x is the MLP's gate/up projection, [m, 2k] (gate then up in each row), and
// the product is taken with SiLU(gate) · up, computed as the pieces are loaded.
// kOutput kAddTo: out is f32 and the product is added to it; its one extra
// load per output comes after the k loop, where registers are free, so the bounds are the same.
// kXTiles: x's rows in tiles of 8 (1 for m ≤ 8, 2 for m ≤ 16), one mma pair per tile.
// kSiluOfHalves: n is the output's width; the CTA's W rows 0-7 are gate rows 8·b.., its rows
// 8-15 the up rows n + 8·b.. of the same outputs (GemvOutput::kSiluOfHalves).
// kRopeKvWrite: a CTA below rot_ctas (GemvRopeKv's q and k heads, head_dim / 16 CTAs each)
// takes dims 8j.. and half + 8j.. of its head as tile rows 0-7 and 8-15; the others 16 dims
// of a v head, as plain tiles.
// kNorm (GemvNorm): an adding GEMV feeds the norm after it, any other is scaled by that norm.
// kExchanging (an adding GEMV with a GemvNorm whose exchange spans ranks): it only sends its
// products and leaves them in `stash` (GemvKernel adds the sum).
template <typename T, typename OutT, bool kSiluInput, GemvOutput kOutput, int kXTiles, bool kNorm,
          bool kExchanging = false>
__device__ __forceinline__ void GemvTile(const T* __restrict__ x, const T* __restrict__ w, OutT* __restrict__ out,
                                         int m, int64_t n, int64_t k, const GemvRopeKv& rope, const GemvNorm& norm,
                                         unsigned tile, unsigned tiles, ExchangeStash* stash = nullptr) {
  constexpr bool kAddTo = kOutput == GemvOutput::kAddTo, kSiluOutput = kOutput == GemvOutput::kSiluOfHalves;
  constexpr bool kRope = kOutput == GemvOutput::kRopeKvWrite;
  constexpr bool kFeedsNorm = kNorm && kAddTo, kScaledByNorm = kNorm && !kAddTo;
  static_assert(!kAddTo || std::is_same_v<OutT, float>, "the product is added only to an f32 output");
  static_assert(!kSiluOutput || (std::is_same_v<OutT, T> && !kSiluInput), "SiLU of halves: plain input, stored in T");
  __shared__ float4 partial[kMaxWarps][kXTiles][32];  // each warp's accumulators, for the sum over warps
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t first_row = static_cast<int64_t>(tile) * kTileRows;
  const int64_t pieces = k >> 3;  // 16-byte pieces per row
  // Rows past n (the last tile of an n that is not a multiple of 16) re-read row n - 1;
  // their results are never stored. SiLU of halves: gate row 8b + g and up row n + 8b + g
  // (n a multiple of 8, so every row exists).
  const int64_t half_first = static_cast<int64_t>(tile) * 8;
  int64_t row_lo = kSiluOutput ? half_first + g : first_row + g < n ? first_row + g : n - 1;
  int64_t row_hi = kSiluOutput ? n + half_first + g : first_row + g + 8 < n ? first_row + g + 8 : n - 1;
  // RoPE: this CTA's head and first row (of its pair's first half, or of its v tile).
  const int head_dim = rope.head_dim, half = head_dim / 2;
  const int64_t rot_ctas = kRope ? static_cast<int64_t>(rope.q_heads + rope.kv_heads) * (half / 8) : 0;
  const bool rotated = kRope && tile < rot_ctas;
  const int head = rotated ? static_cast<int>(tile / (half / 8)) : 0;
  const int64_t rope_first = rotated ? static_cast<int64_t>(head) * head_dim + tile % (half / 8) * 8
                                     : rot_ctas * 16 + (tile - rot_ctas) * kTileRows;
  if constexpr (kRope) {
    row_lo = rope_first + g;
    row_hi = rope_first + g + (rotated ? half : 8);
  }
  const uint4* w_lo = reinterpret_cast<const uint4*>(w) + row_lo * pieces + t;
  const uint4* w_hi = reinterpret_cast<const uint4*>(w) + row_hi * pieces + t;
  // Lane g reads x row g + 8·j for tile j. Lanes of x rows past m read row 0 again (the
  // same sectors, so no extra traffic, and no branch): they feed only output columns ≥ m,
  // which are never stored.
  const uint4* x_row[kXTiles];
#pragma unroll
  for (int j = 0; j < kXTiles; ++j) {
    const int row = g + 8 * j;
    x_row[j] = reinterpret_cast<const uint4*>(x) + (row < m ? row : 0) * (kSiluInput ? 2 * pieces : pieces) + t;
  }
  auto load_x = [&](int j, int64_t at) {
    if constexpr (kSiluInput) {
      return SiluMul8<T>(__ldg(x_row[j] + at), __ldg(x_row[j] + pieces + at));
    } else {
      return __ldg(x_row[j] + at);
    }
  };

  // Two accumulator sets per x tile halve the chain of dependent mma's per iteration.
  float c0[kXTiles][4] = {}, c1[kXTiles][4] = {};
  // A k-step is 32 elements (4 pieces, one per t). Warp w takes steps [s, s + kStepsPerLoad)
  // for s = w·kStepsPerLoad, then every warps·kStepsPerLoad steps: the CTA's loads of a row
  // at one time are contiguous, kMaxWarps·kStepsPerLoad·64 bytes.
  const int64_t full_steps = pieces >> 2, steps = (pieces + 3) >> 2;
  const int64_t stride = static_cast<int64_t>(warps) * kStepsPerLoad;
  int64_t s = static_cast<int64_t>(warp) * kStepsPerLoad;
  // W of a full block is loaded at the end of the iteration before the one that multiplies
  // it, so the warp's first block goes out before waiting for the previous kernel (W never
  // depends on it) and streams while that kernel finishes (PDL, pdl.cuh); x is read after.
  uint4 lo[kStepsPerLoad], hi[kStepsPerLoad];
  auto load_w = [&](int64_t block) {
#pragma unroll
    for (int u = 0; u < kStepsPerLoad; ++u) {
      lo[u] = LoadStreaming(w_lo + (block + u) * 4);
      hi[u] = LoadStreaming(w_hi + (block + u) * 4);
    }
  };
  if (s + kStepsPerLoad <= full_steps) load_w(s);
  PdlWaitForPrevious();
  // A scaled GEMV's norm factor per x row, from the parts its feeding GEMV wrote (one per 16
  // of its outputs, k of them); these loads queue behind the first W block's, already out.
  __shared__ float norm_factor[kGemvMaxRows];
  if constexpr (kScaledByNorm) {
    const int64_t parts = (k + kTileRows - 1) / kTileRows;
    for (int col = warp; col < m; col += warps) {
      float sum = 0.0f;
      for (int64_t p = lane; p < parts; p += 32) sum += norm.sum_squares[col * parts + p];
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0) norm_factor[col] = rsqrtf(sum / static_cast<float>(k) + norm.eps);
    }
  }
  for (; s + kStepsPerLoad <= full_steps; s += stride) {
    uint4 xv[kXTiles][kStepsPerLoad];
#pragma unroll
    for (int j = 0; j < kXTiles; ++j) {
#pragma unroll
      for (int u = 0; u < kStepsPerLoad; ++u) xv[j][u] = load_x(j, (s + u) * 4);
    }
#pragma unroll
    for (int u = 0; u < kStepsPerLoad; ++u) {
#pragma unroll
      for (int j = 0; j < kXTiles; ++j) MmaPiece<T>(c0[j], c1[j], lo[u], hi[u], xv[j][u]);
    }
    if (s + stride + kStepsPerLoad <= full_steps) load_w(s + stride);
  }
  // The warp's block that reaches past the last full step (at most one: the next starts
  // at ≥ s + kStepsPerLoad > full_steps ≥ steps - 1). Pieces past k load the row's last
  // piece (a valid address) and are zeroed.
  if (s < steps) {
    uint4 xv[kXTiles][kStepsPerLoad];
#pragma unroll
    for (int u = 0; u < kStepsPerLoad; ++u) {
      const int64_t piece = (s + u) * 4;
      const bool inside = piece + t < pieces;
      const int64_t at = inside ? piece : pieces - 1 - t;
      lo[u] = LoadStreaming(w_lo + at);
      hi[u] = LoadStreaming(w_hi + at);
#pragma unroll
      for (int j = 0; j < kXTiles; ++j) xv[j][u] = inside ? load_x(j, at) : make_uint4(0, 0, 0, 0);
      if (!inside) lo[u] = hi[u] = make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kStepsPerLoad; ++u) {
#pragma unroll
      for (int j = 0; j < kXTiles; ++j) MmaPiece<T>(c0[j], c1[j], lo[u], hi[u], xv[j][u]);
    }
  }
  // Only the sum over warps is left: the next kernel may be scheduled (it waits for our end).
  PdlLaunchNext();
  // An exchanging CTA's call number, read here (a register held through the k loop spills) and
  // recorded by GemvKernel once the twins' products are in.
  static_assert(!kExchanging || kFeedsNorm, "only an adding GEMV feeding a norm exchanges");
  const uint32_t call = kExchanging ? ExchangeCall(norm.exchange, tile) : 0u;

#pragma unroll
  for (int j = 0; j < kXTiles; ++j) {
    partial[warp][j][lane] = make_float4(c0[j][0] + c1[j][0], c0[j][1] + c1[j][1], c0[j][2] + c1[j][2],
                                         c0[j][3] + c1[j][3]);
  }
  __syncthreads();
  // The sum over warps of tile row r (0-15) for x row col: the mma of x tile col / 8 left
  // it in lane (r % 8)·4 + (col % 8) / 2, element (r / 8)·2 + col % 2.
  auto row_sum = [&](int r, int col) {
    const int tile = col >> 3, src_lane = (r & 7) * 4 + ((col & 7) >> 1), element = (r >> 3) * 2 + (col & 1);
    float sum = 0.0f;
    for (int v = 0; v < warps; ++v) sum += reinterpret_cast<const float*>(&partial[v][tile][src_lane])[element];
    if constexpr (kScaledByNorm) sum *= norm_factor[col];  // written before the barrier above
    return sum;
  };
  if constexpr (kRope) {
    StoreRopeKv<T>(rope, row_sum, m, rotated, head, rope_first, rot_ctas);
  } else if constexpr (kFeedsNorm) {
    if constexpr (kExchanging) {
      // The exchange's first half (GemvKernel runs the second): this tile's products go to its
      // twins and wait in `stash` for theirs.
      for (int j = threadIdx.x; j < kTileRows * m; j += blockDim.x) {
        const int col = j >> 4, r = j & 15;
        if (first_row + r >= n) continue;
        const float mine = row_sum(r, col);
        SendProduct(norm.exchange, call, tile, j, mine);
        stash->products[j] = mine;
      }
      if (threadIdx.x == 0) stash->call = call;
    } else {
      AddFeedingNorm<T>(norm, out, m, n, tile, tiles, [&](int r, int col, int) { return row_sum(r, col); });
    }
  } else if constexpr (kSiluOutput) {
    // Output (8b + r, x row col) for j = col·8 + r: SiLU(gate) · up of tile rows r and r + 8,
    // each rounded to T first, as the gate/up store and silu_mul.cu round them.
    for (int j = threadIdx.x; j < 8 * m; j += blockDim.x) {
      const int col = j >> 3, r = j & 7;
      const float gate = ToFloat(FromFloat<T>(row_sum(r, col))), up = ToFloat(FromFloat<T>(row_sum(r + 8, col)));
      out[col * n + half_first + r] = FromFloat<T>(SiluMul(gate, up));
    }
  } else {
    // Output (row first_row + r, x row col) for j = col·16 + r, so 16 consecutive threads
    // store 16 consecutive outputs.
    for (int j = threadIdx.x; j < kTileRows * m; j += blockDim.x) {
      const int col = j >> 4, r = j & 15;
      const int64_t row = first_row + r;
      if (row >= n) continue;
      const float sum = row_sum(r, col);
      if constexpr (kAddTo) {
        out[col * n + row] += sum;  // after PdlWaitForPrevious: every earlier write to out is visible
      } else {
        out[col * n + row] = FromAccumulator<OutT>(sum);
      }
    }
  }
}

// How many of its tiles an exchanging CTA computes and sends before it waits for the twins' products
// of the first: the 70B's 512 tiles take two a CTA, so none waits between its tiles.
// TEXT_GEN_GEMV_EXCHANGE_BATCH=1 waits after each tile, as before (A/B).
constexpr int kExchangeBatch = 4;

// Grid: a CTA per tile (GemvTile), or, for an exchanging GEMV (kExchanging: GemvExchange) whose
// tiles are more than the CTAs resident at once, that many at most (every CTA waits for its twins),
// each taking tiles blockIdx.x, + gridDim.x, ... in turn: up to kExchangeBatch of them computed and
// sent, then each one's sum over the ranks added.
// Three CTAs per SM caps registers at 80, which ptxas meets without spilling (it spills at 64;
// without the bound it picked 80 with a spill). Twice as many x registers (kXTiles 2), a SiLU input,
// or the exchanging instances' loop over tiles spill at three, so those are bound to two (still the
// ~64 KB of W in flight per SM that the loads need; the exchanging ones run <= 2 CTAs per SM anyway).
// One GPU's GEMV feeding a norm has its own instance, without the exchange's loop and stash: sharing
// the exchanging one cost it three CTAs an SM and ~2 us a call. The GemvNorm is __grid_constant__:
// the exchange indexes its mailboxes by rank at run time, which from a by-value parameter makes every
// thread copy the whole parameter into local memory first (a 144-byte frame; session 18).
template <typename T, typename OutT, bool kSiluInput, GemvOutput kOutput, int kXTiles, bool kNorm, bool kExchanging>
__global__ void __launch_bounds__(kMaxWarps * 32, kSiluInput || kXTiles > 1 || kExchanging ? 2 : 3)
    GemvKernel(const T* __restrict__ x, const T* __restrict__ w, OutT* __restrict__ out, int m, int64_t n, int64_t k,
               GemvRopeKv rope, const __grid_constant__ GemvNorm norm, unsigned tiles, unsigned exchange_batch) {
  if constexpr (kExchanging) {
    __shared__ ExchangeStash stash[kExchangeBatch];
    for (unsigned first = blockIdx.x; first < tiles; first += exchange_batch * gridDim.x) {
      unsigned taken = 0;
      for (unsigned tile = first; tile < tiles && taken < exchange_batch; tile += gridDim.x, ++taken) {
        if (tile != blockIdx.x) __syncthreads();  // every thread is done with the last tile's shared sums
        GemvTile<T, OutT, kSiluInput, kOutput, kXTiles, kNorm, true>(x, w, out, m, n, k, rope, norm, tile, tiles,
                                                                     &stash[taken]);
      }
      __syncthreads();  // the stash is written
      for (unsigned i = 0; i < taken; ++i) {
        const unsigned tile = first + i * gridDim.x;
        const ExchangeStash& s = stash[i];
        AddFeedingNorm<T>(norm, out, m, n, tile, tiles, [&](int, int, int j) {
          return ReceivedSum(norm.exchange, s.call, tile, j, s.products[j]);
        });
        if (threadIdx.x == 0) norm.exchange.counters[tile] = s.call;
      }
    }
  } else {  // a loop costs the others spills
    GemvTile<T, OutT, kSiluInput, kOutput, kXTiles, kNorm>(x, w, out, m, n, k, rope, norm, blockIdx.x, gridDim.x);
  }
}

// Warps per CTA for k: up to kMaxWarps, each with at least one full block of steps.
int WarpsFor(int64_t k) {
  const int64_t steps = (k / 8 + 3) / 4;
  return static_cast<int>(
      std::min<int64_t>(kMaxWarps, std::max<int64_t>(1, (steps + kStepsPerLoad - 1) / kStepsPerLoad)));
}

template <typename T, typename OutT, bool kSiluInput, GemvOutput kOutput, bool kNorm, bool kExchanging = false>
auto KernelFor(int64_t m) {
  return m > 8 ? GemvKernel<T, OutT, kSiluInput, kOutput, 2, kNorm, kExchanging>
               : GemvKernel<T, OutT, kSiluInput, kOutput, 1, kNorm, kExchanging>;
}

// The CTAs of the exchanging GEMV (an adding one with a GemvNorm) for m rows and k that the
// current device holds at once: its SMs times the kernel's occupancy. Cached per kernel and device.
template <typename T>
int64_t ResidentExchangingCtas(int64_t m, int64_t k) {
  static std::mutex mutex;
  static std::map<std::tuple<int, bool, int>, int64_t> cache;
  int device = 0;
  TG_CUDA_CHECK(cudaGetDevice(&device));
  const int warps = WarpsFor(k);
  const std::tuple<int, bool, int> key{device, m > 8, warps};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int per_sm = 0, sms = 0;
  TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, KernelFor<T, float, false, GemvOutput::kAddTo, true, true>(m), warps * 32, 0));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return cache[key] = static_cast<int64_t>(per_sm) * sms;
}

template <typename T, typename OutT, bool kSiluInput, GemvOutput kOutput, bool kNorm = false>
void Launch(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
            const GemvRopeKv& rope = {}, const GemvNorm& norm = {}) {
  auto kernel = KernelFor<T, OutT, kSiluInput, kOutput, kNorm>(m);
  const int warps = WarpsFor(k);
  // A CTA per 16 rows of W, or per 8 outputs (8 gate and 8 up rows) for SiLU of halves.
  const int64_t outputs_per_cta = kOutput == GemvOutput::kSiluOfHalves ? 8 : kTileRows;
  const unsigned tiles = static_cast<unsigned>((n + outputs_per_cta - 1) / outputs_per_cta);
  // An exchanging GEMV runs only CTAs resident at once, in as few rounds of tiles as that allows,
  // the tiles shared evenly (every rank computes the same grid).
  static const unsigned exchange_batch =
      static_cast<unsigned>(PositiveFromEnv("TEXT_GEN_GEMV_EXCHANGE_BATCH", kExchangeBatch, kExchangeBatch));
  unsigned blocks = tiles;
  if constexpr (kNorm && kOutput == GemvOutput::kAddTo) {
    if (norm.exchanges()) {
      kernel = KernelFor<T, OutT, kSiluInput, kOutput, kNorm, true>(m);
      const int64_t resident = std::max<int64_t>(1, ResidentExchangingCtas<T>(m, k));
      const int64_t rounds = (tiles + resident - 1) / resident;
      blocks = static_cast<unsigned>((tiles + rounds - 1) / rounds);
    }
  }
  LaunchWithPdl(PdlKernel::kGemv, kernel, dim3(blocks), dim3(warps * 32), 0, stream, static_cast<const T*>(x),
                static_cast<const T*>(w), static_cast<OutT*>(out), static_cast<int>(m), n, k, rope, norm, tiles,
                exchange_batch);
}

// Launch's instance with or without a GemvNorm.
template <typename T, typename OutT, GemvOutput kOutput>
void LaunchNormed(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
                  const GemvRopeKv& rope, const GemvNorm* norm) {
  if (norm) {
    Launch<T, OutT, false, kOutput, true>(stream, x, w, out, m, n, k, rope, *norm);
  } else {
    Launch<T, OutT, false, kOutput>(stream, x, w, out, m, n, k, rope);
  }
}

// The instances GemvSupports admits, and no others.
template <typename T>
void LaunchFor(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
               ElemType out_type, bool silu_input, GemvOutput output, const GemvRopeKv& rope,
               const GemvNorm* norm) {
  constexpr GemvOutput kStore = GemvOutput::kStore, kAddTo = GemvOutput::kAddTo;
  if (output == GemvOutput::kRopeKvWrite) {
    LaunchNormed<T, T, GemvOutput::kRopeKvWrite>(stream, x, w, out, m, n, k, rope, norm);
  } else if (output == GemvOutput::kSiluOfHalves) {
    LaunchNormed<T, T, GemvOutput::kSiluOfHalves>(stream, x, w, out, m, n, k, rope, norm);
  } else if (output == kAddTo) {
    if (silu_input) {
      Launch<T, float, true, kAddTo>(stream, x, w, out, m, n, k);
    } else {
      LaunchNormed<T, float, kAddTo>(stream, x, w, out, m, n, k, rope, norm);
    }
  } else if (silu_input) {
    Launch<T, T, true, kStore>(stream, x, w, out, m, n, k);
  } else if (out_type == ElemType::kF32) {
    Launch<T, float, false, kStore>(stream, x, w, out, m, n, k);
  } else {
    LaunchNormed<T, T, kStore>(stream, x, w, out, m, n, k, rope, norm);
  }
}

}  // namespace

bool GemvSupports(const void* x, const void* w, int64_t m, int64_t n, int64_t k, ElemType in, ElemType out,
                  GemvInput input, GemvOutput output, const GemvRopeKv& rope, const GemvNorm* norm) {
  const bool half_in = in == ElemType::kBF16 || in == ElemType::kF16;
  const bool silu_of_halves = output == GemvOutput::kSiluOfHalves;
  const bool rope_built = rope.head_dim > 0 && rope.head_dim % 16 == 0 && rope.q_heads > 0 && rope.kv_heads > 0 &&
                          n == static_cast<int64_t>(rope.q_heads + 2 * rope.kv_heads) * rope.head_dim &&
                          rope.positions && rope.inv_freq && rope.slot_block && rope.slot_offset && rope.q_out &&
                          rope.k_cache && rope.v_cache && rope.block_size > 0;
  const bool out_built = output == GemvOutput::kAddTo        ? out == ElemType::kF32
                         : output == GemvOutput::kRopeKvWrite ? out == in && input == GemvInput::kPlain && rope_built
                         : silu_of_halves                    ? out == in && input == GemvInput::kPlain && n % 8 == 0
                         : input == GemvInput::kSiluOfGateUp ? out == in
                                                             : out == in || out == ElemType::kF32;
  // A norm is linked only through a plain input: fed (or exchanged) by an adding GEMV, scaling
  // one that stores in `in`. An exchange's tiles must be within its mailboxes (its CTAs, which wait
  // for their twins on the other ranks, Launch keeps to those resident at once).
  const bool adding = output == GemvOutput::kAddTo;
  bool norm_built =
      !norm || (input == GemvInput::kPlain && (adding ? norm->feeds() || (norm->exchanges() && norm->feeds_nothing())
                                                      : norm->scales() && out == in));
  if (norm_built && norm && adding && norm->exchanges()) {
    const GemvExchange& e = norm->exchange;
    const int64_t tiles = (n + kTileRows - 1) / kTileRows;
    norm_built = e.world_size <= kGemvExchangeMaxRanks && e.rank >= 0 && e.rank < e.world_size && e.counters &&
                 tiles <= e.max_ctas;
    for (int r = 0; r < e.world_size && norm_built; ++r) norm_built = e.mailboxes[r] != nullptr;
  }
  return half_in && out_built && norm_built && m >= 1 && m <= kGemvMaxRows && n >= 1 && n <= (int64_t{1} << 34) && k >= 8 &&
         k % 8 == 0 && Aligned(x, 16) && Aligned(w, 16);
}

GemvExchangeBuffers::GemvExchangeBuffers(int world_size, int max_ctas)
    : world_size(world_size),
      max_ctas(max_ctas),
      mailboxes(static_cast<size_t>(world_size) * 2 * static_cast<size_t>(max_ctas) * kExchangeLines * sizeof(uint2)),
      counters(sizeof(uint32_t) * static_cast<size_t>(max_ctas)) {
  TG_CUDA_CHECK(cudaMemset(mailboxes.get(), 0, mailboxes.bytes()));
  TG_CUDA_CHECK(cudaMemset(counters.get(), 0, counters.bytes()));
}

GemvExchange GemvExchangeBuffers::View(int rank) const {
  GemvExchange e;
  e.rank = rank;
  e.world_size = world_size;
  e.mailboxes[rank] = mailboxes.as<char>();
  e.counters = counters.as<uint32_t>();
  e.max_ctas = max_ctas;
  return e;
}

void LaunchGemv(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
                ElemType in, ElemType out_type, GemvInput input, GemvOutput output, const GemvRopeKv& rope,
                const GemvNorm* norm) {
  if (!GemvSupports(x, w, m, n, k, in, out_type, input, output, rope, norm)) {
    throw std::invalid_argument("GEMV kernel cannot compute m " + std::to_string(m) + " n " + std::to_string(n) +
                                " k " + std::to_string(k) +
                                " (needs m <= " + std::to_string(kGemvMaxRows) +
                                ", k a multiple of 8, 16-byte aligned operands, bf16/fp16 in, an output type it"
                                " builds: f32 to add to, the input's for a SiLU input's store or a SiLU of"
                                " halves (plain input, n a multiple of 8) or RoPE (plain input, the qkv width,"
                                " head_dim a multiple of 16, every pointer); a linked norm through a plain input"
                                " only, fed by an adding GEMV with every pointer, scaling a store in the input's"
                                " type)");
  }
  const bool silu = input == GemvInput::kSiluOfGateUp;
  if (in == ElemType::kBF16) {
    LaunchFor<__nv_bfloat16>(stream, x, w, out, m, n, k, out_type, silu, output, rope, norm);
  } else {
    LaunchFor<__half>(stream, x, w, out, m, n, k, out_type, silu, output, rope, norm);
  }
  TG_CUDA_CHECK_LAUNCH("gemv");
}

}  // namespace cuda
}  // namespace tg
