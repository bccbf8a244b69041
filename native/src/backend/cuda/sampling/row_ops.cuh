// Block-wide passes over one logits row for the sampling kernel: reductions,
// a radix select of the smallest prefix (in a rank order) reaching a count or
// probability mass, and an inverse-CDF scan in ascending id order.
//
// Probability weights are fixed point, exp(x - max) * 2^46 in 64-bit integers:
// sums are then exact and independent of the order in which threads add them,
// so a block reproduces its own result bit for bit, and 128256 weights of at
// most 2^46 cannot overflow. A weight under 2^-47 rounds to 0; such tokens are
// never drawn (the CPU would draw one with probability under 1e-9).
#pragma once
#include <cub/block/block_scan.cuh>

#include <cstdint>

#include "backend/cuda/sampling/gpu_sampler.h"

namespace tg {
namespace cuda {
namespace sampling {

constexpr int kThreads = 512;
constexpr int kItems = 4;                    // consecutive ids per thread per tile
constexpr int kTile = kThreads * kItems;     // ids per tile
constexpr int kWarps = kThreads / 32;
constexpr int kBounds = 2 * kThreads;        // candidate bounds: two values per thread
constexpr int kBins = 2048;                  // radix digits of 11, 11 and 10 bits
constexpr double kFixScale = 70368744177664.0;  // 2^46
constexpr int32_t kNoId = 0x7fffffff;

// Monotone map of floats to unsigned keys: a larger float gets a larger key.
__device__ __forceinline__ uint32_t OrderKey(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// A kept prefix of a rank order (larger key first, lower id first on equal keys).
struct Threshold {
  uint32_t key;
  int32_t id;
  __device__ bool Keeps(uint32_t k, int32_t i) const { return k > key || (k == key && i <= id); }
  __device__ bool All() const { return key == 0u && id == kNoId; }
};
constexpr Threshold kKeepAll{0u, kNoId};

// The shorter of two prefixes of one rank order.
__device__ __forceinline__ Threshold Tighter(Threshold a, Threshold b) {
  if (a.key != b.key) return a.key > b.key ? a : b;
  return {a.key, a.id < b.id ? a.id : b.id};
}

using BlockScanU64 = cub::BlockScan<unsigned long long, kThreads>;

constexpr int kCap = 1024;  // candidates (or draw segments) held in shared memory

struct RowShared {
  union {
    BlockScanU64::TempStorage scan;
    unsigned long long u64[kWarps];
    double f64[kWarps];
    int32_t i32[kWarps];
  } red;
  union {  // one user at a time: the radix select, the candidates, or the draw segments
    struct {
      unsigned long long hist[kBins];
      unsigned int count[kBins];
    } radix;
    struct {
      unsigned long long key[kCap];
      float x[kCap];
      unsigned long long key2[kCap];
      float x2[kCap];
    } cand;
    unsigned long long segment[kCap];
  } work;
  float thread_max[kBounds];    // each thread's two largest values, for candidate bounds
  float sorted_max[kBounds];    // the same, largest first
  int32_t found_bin;
  unsigned long long found_above;
  int32_t top_ids[kMaxTopN];
  float top_x[kMaxTopN];
  int32_t top_count;
  int32_t observed_at;
  int32_t cand_count;
  int32_t result;
  unsigned long long crossing_before;
};

// One row as the passes read it: NaN counts as -inf. Penalties and the
// temperature were applied in place by then (the first pass divides).
struct Row {
  const float* logits;
  int32_t vocab;
  bool vector_loads;  // 16-byte aligned rows

  __device__ static float Value(float raw) { return isnan(raw) ? -INFINITY : raw; }
  // The values of ids first .. first+3 (ids past the vocabulary are -inf).
  __device__ void Load(int32_t first, float x[kItems]) const {
    if (first >= vocab) {
#pragma unroll
      for (int e = 0; e < kItems; ++e) x[e] = -INFINITY;
    } else if (vector_loads && first + kItems <= vocab) {
      const float4 q = *reinterpret_cast<const float4*>(logits + first);
      x[0] = Value(q.x), x[1] = Value(q.y), x[2] = Value(q.z), x[3] = Value(q.w);
    } else {
#pragma unroll
      for (int e = 0; e < kItems; ++e) x[e] = first + e < vocab ? Value(logits[first + e]) : -INFINITY;
    }
  }
  __device__ int32_t Tiles() const { return (vocab + kTile - 1) / kTile; }
};

// Calls f(first, x) for each tile of the row (first: the thread's first id in
// it, x: its kItems values), kBatch tiles' loads written before any use.
// (Batches of 1, 4 and 8 timed the same on an H100: the passes are bound by
// their per-element instructions, not by load latency; see
// bench/results/cuda-sampling.md.) Every thread makes the same number of
// calls (ids past the vocabulary are -inf), so f may use warp-wide operations.
constexpr int kBatch = 8;
template <class F>
__device__ __forceinline__ void ForEachTile(const Row& row, F&& f) {
  const int32_t tiles = row.Tiles();
  for (int32_t t0 = 0; t0 < tiles; t0 += kBatch) {
    float x[kBatch][kItems];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) row.Load((t0 + u) * kTile + threadIdx.x * kItems, x[u]);
#pragma unroll
    for (int u = 0; u < kBatch; ++u) f((t0 + u) * kTile + static_cast<int32_t>(threadIdx.x) * kItems, x[u]);
  }
}

// exp(x - max) in units of 2^-46, from the float's bits (no 64-bit
// conversions, which issue at a sixteenth of the float rate).
__device__ __forceinline__ unsigned long long FixedWeight(float x, float max) {
  const uint32_t bits = __float_as_uint(expf(x - max));  // in [0, 1]
  if (bits < 0x00800000u) return 0ull;                   // 0 or subnormal
  const unsigned long long mantissa = (bits & 0x007fffffu) | 0x00800000u;
  const int shift = static_cast<int>(bits >> 23) - 127 + 23;  // w = mantissa * 2^(exponent - 23)
  return shift >= 0 ? mantissa << shift : (shift > -32 ? mantissa >> -shift : 0ull);
}

// Block-wide reductions; every thread gets the result.
template <class T, class Op>
__device__ T BlockReduce(T v, Op op, T identity, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // scratch may still be read by an earlier reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kWarps ? scratch[lane] : identity;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
struct Sum { template <class T> __device__ T operator()(T a, T b) const { return a + b; } };
struct Max { template <class T> __device__ T operator()(T a, T b) const { return a > b ? a : b; } };
struct Min { template <class T> __device__ T operator()(T a, T b) const { return a < b ? a : b; } };

__device__ __forceinline__ unsigned long long SumU64(RowShared& s, unsigned long long v) {
  return BlockReduce(v, Sum(), 0ull, s.red.u64);
}
__device__ __forceinline__ double SumF64(RowShared& s, double v) { return BlockReduce(v, Sum(), 0.0, s.red.f64); }
__device__ __forceinline__ int32_t MaxI32(RowShared& s, int32_t v) { return BlockReduce(v, Max(), -1, s.red.i32); }
__device__ __forceinline__ int32_t MinI32(RowShared& s, int32_t v) { return BlockReduce(v, Min(), kNoId, s.red.i32); }

// Adds `value` to histogram bin `bin` for the lanes where `valid`. Lanes of a
// warp that share a bin add once through their leader: the first digits of
// logits crowd into a few bins, where per-lane shared atomics would serialise.
// Every lane of the warp must call it.
__device__ __forceinline__ void HistAdd(RowShared& s, bool valid, uint32_t bin, unsigned long long value) {
  const unsigned active = __ballot_sync(0xffffffffu, valid);
  if (!valid) return;
  const unsigned peers = __match_any_sync(active, bin);
  const int lane = threadIdx.x & 31;
  unsigned long long sum = 0;
  for (unsigned m = peers; m != 0; m &= m - 1) sum += __shfl_sync(peers, value, __ffs(m) - 1);
  if (lane == __ffs(peers) - 1) {
    atomicAdd(&s.work.radix.hist[bin], sum);
    atomicAdd(&s.work.radix.count[bin], static_cast<unsigned>(__popc(peers)));
  }
}

// The rank keys of a value: by value (larger first), or by typicality (closer
// to `center` first; the CPU compares the distances in double, here they are
// rounded to float, so near-equal distances may order by id instead).
struct Keys {
  double center;
  __device__ uint32_t ByValue(float x) const { return OrderKey(x); }
  __device__ uint32_t ByTypicality(float x) const {
    return OrderKey(-static_cast<float>(fabs(center - static_cast<double>(x))));
  }
  __device__ uint32_t Of(bool typical, float x) const { return typical ? ByTypicality(x) : ByValue(x); }
};

// The elements still in play: kept by a value threshold and a typicality threshold.
struct Filter {
  Threshold by_value = kKeepAll;
  Threshold by_typicality = kKeepAll;
  __device__ bool Keeps(const Keys& keys, float x, int32_t id) const {
    if (!by_value.Keeps(keys.ByValue(x), id)) return false;
    return by_typicality.All() || by_typicality.Keeps(keys.ByTypicality(x), id);
  }
};

// Mass of the kept elements, the last kept id with a nonzero weight, and
// sum of w * (x - max) (for the typical warper's entropy).
struct Moments {
  unsigned long long mass;
  int32_t last_positive;
  double weighted_logit;
};

__device__ inline Moments MeasureKept(RowShared& s, const Row& row, float max, const Keys& keys, const Filter& filter,
                               bool want_entropy) {
  unsigned long long mass = 0;
  int32_t last = -1;
  double wx = 0.0;
  ForEachTile(row, [&](int32_t first, const float* x) {
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      if (first + e >= row.vocab || !filter.Keeps(keys, x[e], first + e)) continue;
      const unsigned long long w = FixedWeight(x[e], max);
      if (w == 0) continue;
      mass += w;
      last = first + e;
      if (want_entropy) wx += static_cast<double>(expf(x[e] - max)) * (static_cast<double>(x[e]) - max);
    }
  });
  Moments m;
  m.mass = SumU64(s, mass);
  m.last_positive = MaxI32(s, last);
  m.weighted_logit = want_entropy ? SumF64(s, wx) : 0.0;
  return m;
}

// The first id, in ascending order, at which the running sum of value(x, id)
// over the kept elements passes `target` (> target when strict, else >=);
// kNoId when it never does.
template <class ValueOf>
__device__ int32_t FirstReaching(RowShared& s, const Row& row, ValueOf value_of, unsigned long long target,
                                 bool strict) {
  unsigned long long carry = 0;
  for (int32_t t = 0; t < row.Tiles(); ++t) {
    const int32_t first = t * kTile + threadIdx.x * kItems;
    float x[kItems];
    row.Load(first, x);
    unsigned long long v[kItems], local = 0;
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      v[e] = first + e < row.vocab ? value_of(x[e], first + e) : 0ull;
      local += v[e];
    }
    unsigned long long before, tile_sum;
    __syncthreads();  // the scan storage shares a union with the reductions
    BlockScanU64(s.red.scan).ExclusiveSum(local, before, tile_sum);
    const unsigned long long end = carry + tile_sum;
    if (strict ? end > target : end >= target) {
      unsigned long long c = carry + before;
      int32_t hit = kNoId;
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        c += v[e];
        if (hit == kNoId && (strict ? c > target : c >= target)) hit = first + e;
      }
      return MinI32(s, hit);
    }
    carry = end;
  }
  return kNoId;
}

// The smallest prefix, in the rank order of `typical`'s key, of the elements
// kept by `filter`, whose count (or fixed-point weight when `weighted`) reaches
// `target` (>= 1). Three radix passes fix the boundary key, one more scan (only
// when several elements share that key) the boundary id. kKeepAll when the
// target is out of reach (rounding), as the CPU then keeps everything. The
// result is never looser than the filter's own threshold on that key.
template <bool kWeighted>
__device__ Threshold SelectPrefix(RowShared& s, const Row& row, float max, const Keys& keys, const Filter& filter,
                                  bool typical, unsigned long long target) {
  const Threshold before = typical ? filter.by_typicality : filter.by_value;
  uint32_t prefix = 0;
  unsigned long long remaining = target, boundary_sum = 0;
  unsigned boundary_count = 0;
#pragma unroll 1
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
    const int bins = pass == 2 ? 1024 : 2048;
    const int decided = pass == 0 ? 32 : pass == 1 ? 21 : 10;  // bits from here up are fixed by earlier passes
    __syncthreads();
    for (int i = threadIdx.x; i < kBins; i += kThreads) s.work.radix.hist[i] = 0, s.work.radix.count[i] = 0;
    if (threadIdx.x == 0) s.found_bin = -1;
    __syncthreads();
    ForEachTile(row, [&](int32_t first, const float* x) {
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        const uint32_t key = keys.Of(typical, x[e]);
        bool in = first + e < row.vocab && (decided == 32 || (key >> decided) == (prefix >> decided)) &&
                  filter.Keeps(keys, x[e], first + e);
        HistAdd(s, in, (key >> shift) & (bins - 1), kWeighted ? FixedWeight(x[e], max) : 1ull);
      }
    });
    __syncthreads();
    // Walk the bins from the largest key down: thread j takes 4 bins.
    unsigned long long h[4], local = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int bin = bins - 1 - (threadIdx.x * 4 + k);
      h[k] = bin >= 0 ? s.work.radix.hist[bin] : 0ull;
      local += h[k];
    }
    unsigned long long above, all;
    BlockScanU64(s.red.scan).ExclusiveSum(local, above, all);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (above < remaining && above + h[k] >= remaining) {
        s.found_bin = bins - 1 - (threadIdx.x * 4 + k);
        s.found_above = above;
      }
      above += h[k];
    }
    __syncthreads();
    if (s.found_bin < 0) return before;
    prefix |= static_cast<uint32_t>(s.found_bin) << shift;
    remaining -= s.found_above;
    boundary_sum = s.work.radix.hist[s.found_bin];
    boundary_count = s.work.radix.count[s.found_bin];
  }
  if (boundary_count == 1 || boundary_sum == remaining) return Tighter({prefix, kNoId}, before);
  const int32_t last = FirstReaching(
      s, row,
      [&](float x, int32_t id) -> unsigned long long {
        if (keys.Of(typical, x) != prefix || !filter.Keeps(keys, x, id)) return 0ull;
        return kWeighted ? FixedWeight(x, max) : 1ull;
      },
      remaining, false);
  return Tighter({prefix, last}, before);
}

}  // namespace sampling
}  // namespace cuda
}  // namespace tg
