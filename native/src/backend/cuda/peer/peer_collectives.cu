// See peer_collectives.h. Two protocols, every call in one kernel.
//
// Staged (any size up to the staging buffer): each CTA copies its slice of the input into
// this rank's staging buffer, meets the same CTA of every peer at a flag barrier, then
// reads that slice from every rank's staging buffer. CTA b only ever reads slice b, which
// the peers' CTA b staged before raising the flag CTA b waits for, so the barrier is per
// CTA and no CTA waits for the whole grid. Its latency: a system-wide fence, a flag
// crossing the link, and a read round trip over the link.
//
// Low-latency (messages up to kPeerLlPayloadBytes, the decode step's): each CTA writes its
// slice straight into every peer's mailbox, every 4 bytes of data beside a 4-byte copy of
// the call's number in the same 8-byte store (as NCCL's LL protocol does: an 8-byte store
// lands whole, so a reader that sees the number sees the data beside it), and polls its
// own mailbox until every peer's lines carry the number. No fence, no flag, no read over
// the link: one one-way trip. It moves twice the bytes, which small messages don't feel.
//
// Two-shot (the fused all-reduce + RMSNorm of 3+ ranks, past the low-latency protocol's
// size): a staged call reads (world − 1) × the message over the link, while a ring reads
// each byte about twice whatever the group size. So each rank instead sums only its own
// 1/world of every row's columns from the ranks' staging, writes that sum back over its
// own staged copy, meets its peers again, and reads the other columns' sums from their
// owners: 2 (world − 1) / world of the message over the link, as a ring, with two
// barriers instead of a ring's 2 (world − 1) steps.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdio>
#include <type_traits>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/cta_sum.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/peer/peer_collectives.h"
#include "backend/cuda/peer/peer_wait.cuh"

namespace tg {
namespace cuda {
namespace {

constexpr int kThreads = 512;
// The flags come first in a region: flags[barrier][cta][source rank] holds the number of
// the last call the source rank's CTA announced at that barrier (the two-shot protocol
// meets twice per call, the staged one once). Rounded up so the staging stays aligned.
constexpr size_t kFlagBytes = 16384;
constexpr int kBarriers = 2;
constexpr size_t kBarrierFlags = size_t{kPeerMaxCtas} * kPeerMaxRanks;
static_assert(kBarriers * kBarrierFlags * sizeof(uint32_t) <= kFlagBytes, "flags overflow their page");

__device__ __forceinline__ uint32_t LoadAcquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void StoreRelease(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ uint32_t* Flags(char* region, int barrier) {
  return reinterpret_cast<uint32_t*>(region) + barrier * kBarrierFlags;
}

// The staging buffer of call number `call` (calls alternate between the two).
__device__ __forceinline__ uint4* Staging(char* region, uint32_t call, size_t staging_bytes) {
  return reinterpret_cast<uint4*>(region + kFlagBytes + (call & 1u) * staging_bytes);
}

// Staged data is read with ld.global.cv (never served from a cache line filled before
// the barrier), which, unlike a volatile load, the compiler may keep several of in flight.
__device__ __forceinline__ uint4 LoadFresh(const uint4* p) { return __ldcv(p); }

// Low-latency mailboxes, after the two staging buffers of a region: [source rank][call
// parity] slots, each holding kPeerLlPayloadBytes of one source's data in 16-byte lines of
// {data, number, data, number}. Two slots: a source writes call n + 2 over call n's only
// after this rank has started call n + 1 (which the source's call n + 1 waited for), so
// after this rank has read call n. A reader takes a line only when it carries the call's
// own number, then zeroes it: no call is numbered 0 (StartCall), so a line left from an
// earlier call, even one 2^32 calls back, is never taken.
constexpr size_t kLlVecs = kPeerLlPayloadBytes / 16;
constexpr size_t kLlSlotBytes = 2 * kPeerLlPayloadBytes;

__device__ __forceinline__ uint4* Mailbox(char* region, size_t staging_bytes, int source, uint32_t call) {
  const size_t slot = static_cast<size_t>(source) * 2 + (call & 1u);
  return reinterpret_cast<uint4*>(region + kFlagBytes + 2 * staging_bytes + slot * kLlSlotBytes);
}

// Vector `v` as the two lines of mailbox position `at` of every peer.
__device__ __forceinline__ void PushToPeers(const PeerGroup& g, uint32_t call, size_t at, const uint4& v) {
  for (int p = 0; p < g.world_size; ++p) {
    if (p == g.rank) continue;
    uint4* line = Mailbox(g.regions[p], g.staging_bytes, g.rank, call) + 2 * at;
    asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(line), "r"(v.x), "r"(call), "r"(v.y),
                 "r"(call)
                 : "memory");
    asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(line + 1), "r"(v.z), "r"(call), "r"(v.w),
                 "r"(call)
                 : "memory");
  }
}

__device__ __forceinline__ uint4 LoadVolatile(const uint4* p) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p)
               : "memory");
  return v;
}

// A peer that has not arrived after kPeerWaitLimitNs is gone: stop the context with a message.
__device__ void GiveUp(const PeerGroup& g, int peer) {
  printf("text-gen: rank %d waited %llu s for rank %d at a peer collective; stopping\n", g.rank,
         kPeerWaitLimitNs / 1000000000ull, peer);
  __trap();
}

// Every rank's vector at mailbox position `at` of call `call` (this rank's own is `mine`),
// polled until each peer's has arrived.
template <int kRanks>
__device__ __forceinline__ void PullFromMailbox(const PeerGroup& g, uint32_t call, size_t at, const uint4& mine,
                                                uint4 (&parts)[kRanks]) {
  // Every slot starts as this rank's own vector (the peers' are overwritten as they arrive):
  // choosing the slot by g.rank at run time would put the array in local memory.
  unsigned waiting = 0;
#pragma unroll
  for (int r = 0; r < kRanks; ++r) {
    if (r < g.world_size && r != g.rank) waiting |= 1u << r;
    parts[r] = mine;
  }
  const unsigned long long start = GlobalTimerNs();
  while (waiting) {
#pragma unroll
    for (int r = 0; r < kRanks; ++r) {
      if (!(waiting & (1u << r))) continue;
      uint4* line = Mailbox(g.regions[g.rank], g.staging_bytes, r, call) + 2 * at;
      const uint4 a = LoadVolatile(line), b = LoadVolatile(line + 1);
      if (a.y == call && a.w == call && b.y == call && b.w == call) {
        parts[r] = make_uint4(a.x, a.z, b.x, b.z);
        waiting &= ~(1u << r);
        line[0] = line[1] = make_uint4(0u, 0u, 0u, 0u);
      }
    }
    if (waiting && GlobalTimerNs() - start > kPeerWaitLimitNs) GiveUp(g, __ffs(waiting) - 1);
  }
}

struct Slice {
  size_t begin, end;
};

// This CTA's share of `vecs` 16-byte vectors.
__device__ __forceinline__ Slice CtaSlice(size_t vecs) {
  const size_t per_cta = (vecs + gridDim.x - 1) / gridDim.x;
  const size_t begin = min(vecs, blockIdx.x * per_cta);
  return {begin, min(vecs, begin + per_cta)};
}

// The number of this CTA's current call: one more than its last (read by every thread
// before FinishCall writes it), skipping 0 and 1 where the count wraps (0 marks a read
// mailbox line; the step of 3 keeps the parity alternating). Every kernel of a group runs the
// group's `ctas` CTAs, even those with nothing to move, so every CTA counts every call of its
// group and a number names one call group-wide: a mailbox or staging position that CTA b
// wrote may be read or rewritten by CTA c of another call.
__device__ __forceinline__ uint32_t StartCall(const PeerGroup& g) {
  const uint32_t next = g.counters[blockIdx.x] + 1;
  return next == 0 ? 2 : next;
}

__device__ __forceinline__ void FinishCall(const PeerGroup& g, uint32_t call) {
  if (threadIdx.x == 0) g.counters[blockIdx.x] = call;
}

// Announces that this CTA has staged its slice of call `call`, then waits until the same
// CTA of every rank has done so, at barrier `barrier` (0, or 1 for the two-shot protocol's
// second meeting). Thread p < world_size talks to rank p.
__device__ void MeetPeers(const PeerGroup& g, uint32_t call, int barrier = 0) {
  __syncthreads();  // the CTA's staging stores come before the announcement
  const int peer = static_cast<int>(threadIdx.x);
  if (peer < g.world_size) {
    __threadfence_system();
    StoreRelease(Flags(g.regions[peer], barrier) + blockIdx.x * kPeerMaxRanks + g.rank, call);
    const uint32_t* flag = Flags(g.regions[g.rank], barrier) + blockIdx.x * kPeerMaxRanks + peer;
    const unsigned long long start = GlobalTimerNs();
    // A peer may already be one call ahead (it passed this barrier and announced the next).
    while (static_cast<int32_t>(LoadAcquire(flag) - call) < 0) {
      if (GlobalTimerNs() - start > kPeerWaitLimitNs) GiveUp(g, peer);
    }
  }
  __syncthreads();  // every peer's slice is staged before any thread reads it
}

__device__ __forceinline__ void Stage(const PeerGroup& g, uint32_t call, const uint4* in, Slice s) {
  uint4* mine = Staging(g.regions[g.rank], call, g.staging_bytes);
  for (size_t i = s.begin + threadIdx.x; i < s.end; i += kThreads) mine[i] = in[i];
}

template <typename T>
constexpr int kVecElems = static_cast<int>(16 / sizeof(T));

__device__ __forceinline__ float ToFloat(float v) { return v; }

template <typename T>
__device__ __forceinline__ void AddVector(float (&sum)[kVecElems<T>], const uint4& v) {
  const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int j = 0; j < kVecElems<T>; ++j) sum[j] += ToFloat(e[j]);
}

template <typename T>
__device__ __forceinline__ uint4 PackVector(const float (&sum)[kVecElems<T>]) {
  uint4 v;
  T* e = reinterpret_cast<T*>(&v);
#pragma unroll
  for (int j = 0; j < kVecElems<T>; ++j) {
    if constexpr (std::is_same_v<T, float>) {
      e[j] = sum[j];
    } else {
      e[j] = FromFloat<T>(sum[j]);
    }
  }
  return v;
}

// The ranks' vectors `parts` summed in rank order in f32 and rounded to T: the same bits on
// every rank.
template <typename T>
__device__ __forceinline__ uint4 RankOrderSumOf(const PeerGroup& g, const uint4 (&parts)[kPeerMaxRanks]) {
  float sum[kVecElems<T>] = {};
#pragma unroll
  for (int r = 0; r < kPeerMaxRanks; ++r) {
    if (r < g.world_size) AddVector<T>(sum, parts[r]);
  }
  return PackVector<T>(sum);
}

// Vector `i` of call `call`'s staging summed over the ranks (RankOrderSumOf). Every rank's
// load is issued before the first add.
template <typename T>
__device__ __forceinline__ uint4 RankOrderSum(const PeerGroup& g, uint32_t call, size_t i) {
  uint4 parts[kPeerMaxRanks];
#pragma unroll
  for (int r = 0; r < kPeerMaxRanks; ++r) {
    if (r < g.world_size) parts[r] = LoadFresh(Staging(g.regions[r], call, g.staging_bytes) + i);
  }
  return RankOrderSumOf<T>(g, parts);
}

// Vector `i` of this call (its staging index and mailbox position) summed over the ranks
// (RankOrderSum's bits), by either protocol; `mine` is this rank's own vector, which only the
// low-latency protocol reads.
template <typename T, bool kLowLatency>
__device__ __forceinline__ uint4 ReduceVector(const PeerGroup& g, uint32_t call, size_t i, const uint4& mine) {
  if constexpr (kLowLatency) {
    uint4 parts[kPeerMaxRanks];
    PullFromMailbox(g, call, i, mine, parts);
    return RankOrderSumOf<T>(g, parts);
  } else {
    return RankOrderSum<T>(g, call, i);
  }
}

// Every kernel takes its PeerGroup as __grid_constant__: it indexes regions[] by rank at run time,
// which, from an ordinary by-value parameter, makes each thread copy the whole group into local
// memory before its first load (a 128-272 byte frame; this and the fused kernels' bound of one CTA
// an SM, without which ptxas kept a 64-byte frame in one of them, took 0.5-3 us off each call on
// 2 H200s, session 18).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    PeerAllReduceLlKernel(const __grid_constant__ PeerGroup g, uint4* data, size_t vecs) {
  const uint32_t call = StartCall(g);
  const Slice s = CtaSlice(vecs);
  for (size_t i = s.begin + threadIdx.x; i < s.end; i += kThreads) PushToPeers(g, call, i, data[i]);
  for (size_t i = s.begin + threadIdx.x; i < s.end; i += kThreads) data[i] = ReduceVector<T, true>(g, call, i, data[i]);
  FinishCall(g, call);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    PeerAllReduceKernel(const __grid_constant__ PeerGroup g, uint4* data, size_t vecs) {
  const uint32_t call = StartCall(g);
  const Slice s = CtaSlice(vecs);
  Stage(g, call, data, s);
  MeetPeers(g, call);
  for (size_t i = s.begin + threadIdx.x; i < s.end; i += kThreads) data[i] = RankOrderSum<T>(g, call, i);
  FinishCall(g, call);
}

__global__ void __launch_bounds__(kThreads)
    PeerAllGatherKernel(const __grid_constant__ PeerGroup g, const uint4* in, size_t vecs, uint4* out) {
  const uint32_t call = StartCall(g);
  const Slice s = CtaSlice(vecs);
  Stage(g, call, in, s);
  MeetPeers(g, call);
  for (int r = 0; r < g.world_size; ++r) {
    const uint4* theirs = Staging(g.regions[r], call, g.staging_bytes);
    for (size_t i = s.begin + threadIdx.x; i < s.end; i += kThreads) out[r * vecs + i] = LoadFresh(theirs + i);
  }
  FinishCall(g, call);
}

// Row r of the residual add and RMSNorm after a row-parallel layer: residual[r] += the row's
// reduced delta (vector i of it is `reduced(at, i)`, at its position `at` in the message), then
// out[r] = the normalised row, all from registers: kVecs 16-byte vectors (kVecElems<T>
// elements) per thread. Every thread of the CTA calls it.
template <typename T, int kVecs, typename Reduced>
__device__ __forceinline__ void AddRmsNormRow(int r, int row_vecs, float* __restrict__ residual,
                                              const float* __restrict__ weight, float eps, uint4* __restrict__ out,
                                              Reduced reduced) {
  constexpr int kE = kVecElems<T>;
  const int hidden = row_vecs * kE;
  float v[kVecs][kE];
  float squares = 0.0f;
  float* x = residual + static_cast<int64_t>(r) * hidden;
#pragma unroll
  for (int u = 0; u < kVecs; ++u) {
    const int i = threadIdx.x + u * kThreads;
    if (i >= row_vecs) continue;
    const size_t at = static_cast<size_t>(r) * row_vecs + i;
    const uint4 d = reduced(at, i);
    const T* e = reinterpret_cast<const T*>(&d);
    float4* xv = reinterpret_cast<float4*>(x + i * kE);
#pragma unroll
    for (int h = 0; h < kE / 4; ++h) {
      float4 f = xv[h];
      f.x += ToFloat(e[4 * h]);
      f.y += ToFloat(e[4 * h + 1]);
      f.z += ToFloat(e[4 * h + 2]);
      f.w += ToFloat(e[4 * h + 3]);
      xv[h] = f;
      v[u][4 * h] = f.x, v[u][4 * h + 1] = f.y, v[u][4 * h + 2] = f.z, v[u][4 * h + 3] = f.w;
      squares += f.x * f.x + f.y * f.y + f.z * f.z + f.w * f.w;
    }
  }
  const float inv = rsqrtf(CtaSum<kThreads>(squares) / static_cast<float>(hidden) + eps);
#pragma unroll
  for (int u = 0; u < kVecs; ++u) {
    const int i = threadIdx.x + u * kThreads;
    if (i >= row_vecs) continue;
    const float4* w = reinterpret_cast<const float4*>(weight + i * kE);
    float normed[kE];
#pragma unroll
    for (int h = 0; h < kE / 4; ++h) {
      const float4 wv = w[h];
      normed[4 * h] = wv.x * (v[u][4 * h] * inv);
      normed[4 * h + 1] = wv.y * (v[u][4 * h + 1] * inv);
      normed[4 * h + 2] = wv.z * (v[u][4 * h + 2] * inv);
      normed[4 * h + 3] = wv.w * (v[u][4 * h + 3] * inv);
    }
    out[static_cast<size_t>(r) * row_vecs + i] = PackVector<T>(normed);
  }
  __syncthreads();  // CtaSum's shared array is reused by the next row
}

// The rows of a fused call that this CTA takes: r = blockIdx.x, + gridDim.x, ...
__device__ __forceinline__ int CtaRows(int rows) {
  return max(0, (rows - static_cast<int>(blockIdx.x) + static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x));
}
// The message position of vector j of columns [begin, begin + width) of this CTA's rows (of
// row_vecs vectors each), those columns of its rows laid end to end.
__device__ __forceinline__ size_t CtaRowVector(int j, int row_vecs, int begin, int width) {
  return static_cast<size_t>(blockIdx.x + (j / width) * gridDim.x) * row_vecs + begin + j % width;
}

// Copies this CTA's rows (r = blockIdx.x, + gridDim.x, ...) of `delta` into this rank's staging
// of call `call`, and returns that staging.
// Four vectors a thread are loaded before any is stored, so that they are in flight together.
__device__ __forceinline__ uint4* StageRows(const PeerGroup& g, uint32_t call, const uint4* __restrict__ delta,
                                           int rows, int row_vecs) {
  constexpr int kUnroll = 4;
  uint4* __restrict__ mine = Staging(g.regions[g.rank], call, g.staging_bytes);
  const int n = CtaRows(rows) * row_vecs;
  for (int j0 = threadIdx.x; j0 < n; j0 += kUnroll * kThreads) {
    uint4 v[kUnroll];
    size_t at[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kThreads;
      at[u] = CtaRowVector(j, row_vecs, 0, row_vecs);
      if (j < n) v[u] = delta[at[u]];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (j0 + u * kThreads < n) mine[at[u]] = v[u];
    }
  }
  return mine;
}

// The all-reduce of a row-parallel layer's output fused with the residual add and RMSNorm
// that follow it. Row r belongs to CTA r % ctas; a CTA without rows only counts the
// call. Each CTA stages its rows and meets its peers (or pushes its rows into the peers'
// mailboxes), then for each row sums the ranks' copies in rank order in f32 and rounds to
// T (the bits PeerAllReduceKernel leaves), adds them to the f32 residual, and writes the
// normalised row (AddRmsNormRow).
template <typename T, int kVecs, bool kLowLatency>
__global__ void __launch_bounds__(kThreads, 1)
    PeerAllReduceAddRmsNormKernel(const __grid_constant__ PeerGroup g, const uint4* __restrict__ delta,
                                  float* __restrict__ residual, const float* __restrict__ weight, int rows,
                                  int row_vecs, float eps, uint4* __restrict__ out) {
  const uint32_t call = StartCall(g);
  if constexpr (kLowLatency) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
      for (int i = threadIdx.x; i < row_vecs; i += kThreads) {
        const size_t at = static_cast<size_t>(r) * row_vecs + i;
        PushToPeers(g, call, at, delta[at]);
      }
    }
  } else {
    StageRows(g, call, delta, rows, row_vecs);
    if (static_cast<int>(blockIdx.x) < rows) MeetPeers(g, call);
  }
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    AddRmsNormRow<T, kVecs>(r, row_vecs, residual, weight, eps, out, [&](size_t at, int) {
      return ReduceVector<T, kLowLatency>(g, call, at, kLowLatency ? delta[at] : uint4{});
    });
  }
  FinishCall(g, call);
}

// The two-shot protocol's columns split in `world` contiguous runs: rank k sums vectors
// [ColumnBegin(k), ColumnBegin(k + 1)) of every row, and ColumnOwner(i) is the k whose run
// holds i (i ≥ ⌈k·n/w⌉ exactly when ⌊i·w/n⌋ ≥ k).
__device__ __forceinline__ int ColumnBegin(int rank, int row_vecs, int world) {
  return static_cast<int>((static_cast<int64_t>(rank) * row_vecs + world - 1) / world);
}
__device__ __forceinline__ int ColumnOwner(int i, int row_vecs, int world) {
  return static_cast<int>(static_cast<int64_t>(i) * world / row_vecs);
}

// The same fused call by the two-shot protocol (the file's head): rows as above. After the
// first meeting each CTA sums its rows' vectors of this rank's columns (every thread busy,
// across the CTA's rows) and writes the sums over its own staged copy, which only this rank
// reads at those columns; after the second, every row takes each vector from its column's
// owner. The sums are RankOrderSum's, so every rank gets the same bits.
template <typename T, int kVecs>
__global__ void __launch_bounds__(kThreads, 1)
    PeerAllReduceAddRmsNormTwoShotKernel(const __grid_constant__ PeerGroup g, const uint4* __restrict__ delta,
                                         float* __restrict__ residual, const float* __restrict__ weight, int rows,
                                         int row_vecs, float eps, uint4* __restrict__ out) {
  const uint32_t call = StartCall(g);
  if (static_cast<int>(blockIdx.x) < rows) {
    uint4* mine = StageRows(g, call, delta, rows, row_vecs);
    MeetPeers(g, call, 0);
    // This rank's columns [begin, end) of the CTA's rows, flattened so that every thread works.
    const int begin = ColumnBegin(g.rank, row_vecs, g.world_size);
    const int end = ColumnBegin(g.rank + 1, row_vecs, g.world_size);
    const int width = end - begin;
    const int n = CtaRows(rows) * width;
    // Two vectors a thread at a time, so that every rank's loads of both are in flight together
    // (a j1 past the end reads j0's vector again and stores nothing).
    for (int j0 = threadIdx.x; j0 < n; j0 += 2 * kThreads) {
      const int j1 = j0 + kThreads;
      const size_t at0 = CtaRowVector(j0, row_vecs, begin, width);
      const size_t at1 = CtaRowVector(j1 < n ? j1 : j0, row_vecs, begin, width);
      const uint4 sum0 = RankOrderSum<T>(g, call, at0), sum1 = RankOrderSum<T>(g, call, at1);
      mine[at0] = sum0;
      if (j1 < n) mine[at1] = sum1;
    }
    MeetPeers(g, call, 1);
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
      AddRmsNormRow<T, kVecs>(r, row_vecs, residual, weight, eps, out, [&](size_t at, int i) {
        const int owner = ColumnOwner(i, row_vecs, g.world_size);
        return LoadFresh(Staging(g.regions[owner], call, g.staging_bytes) + at);
      });
    }
  }
  FinishCall(g, call);
}

// The plain all-reduce by the low-latency protocol where it takes the message.
template <typename T>
void LaunchAllReduce(const PeerGroup& g, uint4* data, size_t vecs, cudaStream_t stream) {
  auto kernel = g.low_latency && vecs <= kLlVecs ? PeerAllReduceLlKernel<T> : PeerAllReduceKernel<T>;
  kernel<<<g.ctas, kThreads, 0, stream>>>(g, data, vecs);
}

PeerProtocol RowsProtocol(const PeerGroup& g, int rows, int row_vecs) {
  if (g.low_latency && static_cast<size_t>(rows) * row_vecs <= kLlVecs) return PeerProtocol::kLowLatency;
  return g.world_size >= g.two_shot_min_world ? PeerProtocol::kTwoShot : PeerProtocol::kStaged;
}

// The fused kernel of the rows' protocol with the fewest vectors per thread that hold a row,
// on every CTA (those past the rows only count the call: StartCall).
template <typename T>
void LaunchRows(const PeerGroup& g, const uint4* delta, float* residual, const float* weight, int rows, int row_vecs,
                float eps, uint4* out, cudaStream_t stream) {
  constexpr int kMaxVecs = static_cast<int>(kPeerRowMaxVecs / kThreads);
  const int vecs = (row_vecs + kThreads - 1) / kThreads;
  using Kernel = void (*)(PeerGroup, const uint4*, float*, const float*, int, int, float, uint4*);
  const Kernel kernels[3][3] = {
      {PeerAllReduceAddRmsNormKernel<T, 1, true>, PeerAllReduceAddRmsNormKernel<T, 2, true>,
       PeerAllReduceAddRmsNormKernel<T, kMaxVecs, true>},
      {PeerAllReduceAddRmsNormKernel<T, 1, false>, PeerAllReduceAddRmsNormKernel<T, 2, false>,
       PeerAllReduceAddRmsNormKernel<T, kMaxVecs, false>},
      {PeerAllReduceAddRmsNormTwoShotKernel<T, 1>, PeerAllReduceAddRmsNormTwoShotKernel<T, 2>,
       PeerAllReduceAddRmsNormTwoShotKernel<T, kMaxVecs>}};
  kernels[static_cast<int>(RowsProtocol(g, rows, row_vecs))][vecs == 1 ? 0 : vecs == 2 ? 1 : 2]
      <<<g.ctas, kThreads, 0, stream>>>(g, delta, residual, weight, rows, row_vecs, eps, out);
}

void CheckFits(const PeerGroup& g, size_t count, ElemType type, const void* a, const void* b) {
  if (!PeerCollectiveFits(g, count, type, a, b)) {
    throw std::invalid_argument("peer collective cannot move " + std::to_string(count) +
                                " elements (needs whole 16-byte vectors within the staging buffer, 16-byte aligned)");
  }
}

}  // namespace

PeerBuffers::PeerBuffers(size_t staging)
    : staging_bytes(staging),
      region(kFlagBytes + 2 * staging + kPeerMaxRanks * 2 * kLlSlotBytes),
      counters(kPeerMaxCtas * sizeof(uint32_t)) {
  TG_CUDA_CHECK(cudaMemset(region.get(), 0, region.bytes()));
  TG_CUDA_CHECK(cudaMemset(counters.get(), 0, counters.bytes()));
}

void PeerBuffers::SetCallCount(uint32_t calls) {
  const std::vector<uint32_t> counts(kPeerMaxCtas, calls), flags(kBarriers * kBarrierFlags, calls);
  TG_CUDA_CHECK(cudaMemcpy(counters.get(), counts.data(), counts.size() * sizeof(uint32_t), cudaMemcpyHostToDevice));
  TG_CUDA_CHECK(cudaMemcpy(region.get(), flags.data(), flags.size() * sizeof(uint32_t), cudaMemcpyHostToDevice));
}

PeerGroup PeerBuffers::Group(int rank, int world_size) const {
  PeerGroup g;
  g.rank = rank;
  g.world_size = world_size;
  g.regions[rank] = region.as<char>();
  g.counters = counters.as<uint32_t>();
  g.staging_bytes = staging_bytes;
  return g;
}

bool PeerCollectiveFits(const PeerGroup& g, size_t count, ElemType type, const void* a, const void* b) {
  const size_t bytes = count * ElemSize(type);
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return g.world_size >= 1 && g.world_size <= kPeerMaxRanks && g.ctas >= 1 && g.ctas <= kPeerMaxCtas &&
         g.counters != nullptr && bytes % 16 == 0 &&
         bytes <= g.staging_bytes && g.staging_bytes % 16 == 0 && aligned(a) && aligned(b);
}

void LaunchPeerAllReduceSum(const PeerGroup& g, void* data, size_t count, ElemType type, cudaStream_t stream) {
  CheckFits(g, count, type, data, data);
  const size_t vecs = count * ElemSize(type) / 16;
  auto* v = static_cast<uint4*>(data);
  switch (type) {
    case ElemType::kF32: LaunchAllReduce<float>(g, v, vecs, stream); break;
    case ElemType::kBF16: LaunchAllReduce<__nv_bfloat16>(g, v, vecs, stream); break;
    case ElemType::kF16: LaunchAllReduce<__half>(g, v, vecs, stream); break;
  }
  TG_CUDA_CHECK_LAUNCH("peer all-reduce");
}

void LaunchPeerAllGather(const PeerGroup& g, const void* in, size_t count, ElemType type, void* out,
                         cudaStream_t stream) {
  CheckFits(g, count, type, in, out);
  PeerAllGatherKernel<<<g.ctas, kThreads, 0, stream>>>(g, static_cast<const uint4*>(in),
                                                       count * ElemSize(type) / 16, static_cast<uint4*>(out));
  TG_CUDA_CHECK_LAUNCH("peer all-gather");
}

bool PeerAllReduceAddRmsNormFits(const PeerGroup& g, int64_t rows, int64_t hidden, ElemType type, const void* delta,
                                 const float* residual, const float* weight, const void* out) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool half = type == ElemType::kBF16 || type == ElemType::kF16;
  const int64_t row_bytes = hidden * 2;
  return half && rows >= 1 && hidden >= 8 && hidden % 8 == 0 && row_bytes / 16 <= kPeerRowMaxVecs &&
         PeerCollectiveFits(g, static_cast<size_t>(rows * hidden), type, delta, out) && aligned(residual) &&
         aligned(weight);
}

void LaunchPeerAllReduceAddRmsNorm(const PeerGroup& g, const void* delta, float* residual, const float* weight,
                                   int64_t rows, int64_t hidden, float eps, ElemType type, void* out,
                                   cudaStream_t stream) {
  if (!PeerAllReduceAddRmsNormFits(g, rows, hidden, type, delta, residual, weight, out)) {
    throw std::invalid_argument("peer all-reduce + RMSNorm cannot take " + std::to_string(rows) + " rows of " +
                                std::to_string(hidden) + " (bf16/fp16, hidden a multiple of 8 up to " +
                                std::to_string(kPeerRowMaxVecs * 8) + ", rows within the staging buffer, aligned)");
  }
  const int row_vecs = static_cast<int>(hidden / 8);
  TG_DISPATCH_HALF(type, LaunchRows, g, static_cast<const uint4*>(delta), residual, weight, static_cast<int>(rows),
                   row_vecs, eps, static_cast<uint4*>(out), stream);
  TG_CUDA_CHECK_LAUNCH("peer all-reduce + RMSNorm");
}

PeerProtocol PeerAllReduceAddRmsNormProtocol(const PeerGroup& g, int64_t rows, int64_t hidden) {
  return RowsProtocol(g, static_cast<int>(rows), static_cast<int>(hidden / 8));
}

}  // namespace cuda
}  // namespace tg
