// The fast paths of the sampling kernel, which finish in shared memory:
//
// - Candidates. Each thread's two largest values are distinct elements of the
//   row, so the k-th largest of these kBounds values bounds the row's k-th
//   largest value from below, and those whose weights reach a mass bound the
//   top-p boundary. Everything at or above such a bound is
//   gathered in one pass; when at most kCap are, top-k, top-p, typical-p, the
//   draw and top-n are exact on that small set (ranked by counting, no sort
//   network). Otherwise (flat distributions, wide top-k, typical-p alone) the
//   radix-select path of row_ops.cuh runs instead.
// - Segments. A draw without truncation walks the CDF of the whole row: the
//   mass pass keeps each warp's sum per tile (128 ids), so the draw scans those
//   sums in shared memory and reads one segment of logits again.
#pragma once
#include "backend/cuda/sampling/row_ops.cuh"

namespace tg {
namespace cuda {
namespace sampling {

// Candidate keys: larger value first, lower id first on equal values.
__device__ __forceinline__ unsigned long long ValueKey(float x, int32_t id) {
  return (static_cast<unsigned long long>(OrderKey(x)) << 32) | static_cast<uint32_t>(~id);
}
__device__ __forceinline__ int32_t IdOfKey(unsigned long long key) {
  return static_cast<int32_t>(~static_cast<uint32_t>(key));
}

__device__ __forceinline__ unsigned long long TargetOf(float fraction, unsigned long long mass) {
  const double t = ceil(static_cast<double>(fraction) * static_cast<double>(mass));
  return t < 1.0 ? 1ull : static_cast<unsigned long long>(t);
}

// s.sorted_max = s.thread_max, largest first.
__device__ inline void SortThreadMaxima(RowShared& s) {
  __syncthreads();
  for (int32_t i = threadIdx.x; i < kBounds; i += kThreads) {
    const float mine = s.thread_max[i];
    int32_t rank = 0;
    for (int32_t j = 0; j < kBounds; ++j) {
      const float other = s.thread_max[j];
      rank += other > mine || (other == mine && j < i);
    }
    s.sorted_max[rank] = mine;
  }
  __syncthreads();
}

// The first index i < n (n <= 2 * kThreads) at which the running sum of
// value_at(0..i) passes `target` (> when strict, else >=), the sum before it,
// and the whole sum. index is kNoId when the sum never passes.
struct Crossing {
  int32_t index;
  unsigned long long before;
  unsigned long long total;
};
template <class ValueAt>
__device__ Crossing FirstCrossing(RowShared& s, int32_t n, ValueAt value_at, unsigned long long target, bool strict) {
  const int32_t i0 = 2 * static_cast<int32_t>(threadIdx.x), i1 = i0 + 1;
  const unsigned long long v0 = i0 < n ? value_at(i0) : 0ull, v1 = i1 < n ? value_at(i1) : 0ull;
  unsigned long long before, total;
  __syncthreads();
  BlockScanU64(s.red.scan).ExclusiveSum(v0 + v1, before, total);
  auto reaches = [&](unsigned long long c) { return strict ? c > target : c >= target; };
  int32_t hit = kNoId;
  unsigned long long hit_before = 0;
  if (i0 < n && reaches(before + v0)) {
    hit = i0, hit_before = before;
  } else if (i1 < n && reaches(before + v0 + v1)) {
    hit = i1, hit_before = before + v0;
  }
  const int32_t index = MinI32(s, hit);
  if (index != kNoId && hit == index) s.crossing_before = hit_before;
  __syncthreads();
  return {index, index != kNoId ? s.crossing_before : 0ull, total};
}

// Gathers every element with value >= bound into s.work.cand (key, x);
// returns how many there are (only the first kCap are stored).
__device__ inline int32_t GatherAtLeast(RowShared& s, const Row& row, float bound) {
  __syncthreads();
  if (threadIdx.x == 0) s.cand_count = 0;
  __syncthreads();
  const unsigned lane = threadIdx.x & 31;
  ForEachTile(row, [&](int32_t first, const float* x) {
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const bool in = first + e < row.vocab && x[e] >= bound;
      const unsigned ballot = __ballot_sync(0xffffffffu, in);
      if (ballot == 0) continue;
      int32_t base = 0;
      if (lane == static_cast<unsigned>(__ffs(ballot) - 1)) base = atomicAdd(&s.cand_count, __popc(ballot));
      base = __shfl_sync(0xffffffffu, base, __ffs(ballot) - 1);
      const int32_t at = base + __popc(ballot & ((1u << lane) - 1));
      if (in && at < kCap) s.work.cand.key[at] = ValueKey(x[e], first + e), s.work.cand.x[at] = x[e];
    }
  });
  __syncthreads();
  return s.cand_count;
}

// Places the n entries of (key, x) (distinct keys) by descending key into
// (out_key, out_x), keeping the first `limit`. Rank by counting: n <= kCap.
__device__ inline void RankSort(const unsigned long long* key, const float* x, int32_t n, int32_t limit,
                                unsigned long long* out_key, float* out_x) {
  __syncthreads();
  for (int32_t i = threadIdx.x; i < n; i += kThreads) {
    const unsigned long long mine = key[i];
    int32_t rank = 0;
    for (int32_t j = 0; j < n; ++j) rank += key[j] > mine;
    if (rank < limit) out_key[rank] = mine, out_x[rank] = x[i];
  }
  __syncthreads();
}

// Sum of the fixed weights of the first m of xs, and of w * (x - max).
__device__ inline Moments MeasurePrefix(RowShared& s, const float* xs, int32_t m, float max, bool want_entropy) {
  unsigned long long mass = 0;
  double wx = 0.0;
  for (int32_t i = threadIdx.x; i < m; i += kThreads) {
    const unsigned long long w = FixedWeight(xs[i], max);
    if (w == 0) continue;
    mass += w;
    if (want_entropy) wx += static_cast<double>(expf(xs[i] - max)) * (static_cast<double>(xs[i]) - max);
  }
  Moments out;
  out.mass = SumU64(s, mass);
  out.last_positive = -1;
  out.weighted_logit = want_entropy ? SumF64(s, wx) : 0.0;
  return out;
}

// The draw with top-k (k <= kBounds) or top-p, and typical-p after them, on
// candidates; kNoId when the candidates would not hold the kept set.
__device__ inline int32_t DrawFromCandidates(RowShared& s, const Row& row, const GpuSamplingRow& p, float max,
                                             unsigned long long mass_all, double u) {
  const bool top_k = p.top_k > 0 && p.top_k < row.vocab;
  const bool top_p = p.top_p < 1.0f;
  const bool typical = p.typical_p < 1.0f;
  float bound;
  if (top_k && p.top_k <= kBounds) {
    bound = s.sorted_max[p.top_k - 1];
  } else if (!top_k && top_p) {
    const Crossing c = FirstCrossing(
        s, kBounds, [&](int32_t i) { return FixedWeight(s.sorted_max[i], max); }, TargetOf(p.top_p, mass_all), false);
    if (c.index == kNoId) return kNoId;
    bound = s.sorted_max[c.index];
  } else {
    return kNoId;
  }
  const int32_t count = GatherAtLeast(s, row, bound);
  if (count > kCap) return kNoId;
  auto& c = s.work.cand;
  RankSort(c.key, c.x, count, count, c.key2, c.x2);  // value order
  int32_t m = top_k ? p.top_k : count;
  if (top_p) {
    const unsigned long long mass = top_k ? MeasurePrefix(s, c.x2, m, max, false).mass : mass_all;
    const Crossing cut = FirstCrossing(
        s, m, [&](int32_t i) { return FixedWeight(c.x2[i], max); }, TargetOf(p.top_p, mass), false);
    if (cut.index != kNoId) m = cut.index + 1;
  }
  if (typical) {
    const Moments kept = MeasurePrefix(s, c.x2, m, max, true);
    const double mass = static_cast<double>(kept.mass) / kFixScale;
    const double log_mass = log(mass);
    const double entropy = log_mass - kept.weighted_logit / mass;
    const Keys keys{static_cast<double>(max) + log_mass - entropy};
    for (int32_t i = threadIdx.x; i < m; i += kThreads) {
      c.key[i] = (static_cast<unsigned long long>(keys.ByTypicality(c.x2[i])) << 32) | (c.key2[i] & 0xffffffffull);
      c.x[i] = c.x2[i];
    }
    RankSort(c.key, c.x, m, m, c.key2, c.x2);  // typicality order
    const Crossing cut = FirstCrossing(
        s, m, [&](int32_t i) { return FixedWeight(c.x2[i], max); }, TargetOf(p.typical_p, kept.mass), false);
    if (cut.index != kNoId) m = cut.index + 1;
  }
  // The kept set in ascending id order (descending ~id), then the inverse CDF.
  __syncthreads();
  for (int32_t i = threadIdx.x; i < m; i += kThreads) c.key[i] = c.key2[i] & 0xffffffffull, c.x[i] = c.x2[i];
  RankSort(c.key, c.x, m, m, c.key2, c.x2);
  const unsigned long long total = MeasurePrefix(s, c.x2, m, max, false).mass;
  const unsigned long long target = static_cast<unsigned long long>(u * static_cast<double>(total));
  const Crossing pick = FirstCrossing(s, m, [&](int32_t i) { return FixedWeight(c.x2[i], max); }, target, true);
  if (pick.index != kNoId) return IdOfKey(c.key2[pick.index]);
  int32_t last = -1;  // u * total rounded up to the total: the last possible token
  for (int32_t i = threadIdx.x; i < m; i += kThreads) {
    if (FixedWeight(c.x2[i], max) > 0 && i > last) last = i;
  }
  last = MaxI32(s, last);
  return IdOfKey(c.key2[last < 0 ? m - 1 : last]);
}

// Top-n (n <= kMaxTopN) on candidates; false when more than kCap tie for the bound.
__device__ inline bool TopNFromCandidates(RowShared& s, const Row& row, int32_t n, float max, double log_sum,
                                          int32_t* ids, float* logprobs) {
  const int32_t count = GatherAtLeast(s, row, s.sorted_max[n - 1]);
  if (count > kCap) return false;
  auto& c = s.work.cand;
  RankSort(c.key, c.x, count, n, c.key2, c.x2);
  if (static_cast<int32_t>(threadIdx.x) < n) {
    ids[threadIdx.x] = IdOfKey(c.key2[threadIdx.x]);
    logprobs[threadIdx.x] = static_cast<float>(static_cast<double>(c.x2[threadIdx.x]) - max - log_sum);
  }
  return true;
}

// Mass of the whole row; with `segments`, each warp's weight sum per tile in
// s.work.segment (needs Tiles() * kWarps <= kCap).
__device__ inline Moments MeasureRow(RowShared& s, const Row& row, float max, bool segments) {
  unsigned long long mass = 0;
  int32_t last = -1;
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the segments share memory with earlier users
  ForEachTile(row, [&](int32_t first, const float* x) {
    unsigned long long local = 0;
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const unsigned long long w = first + e < row.vocab ? FixedWeight(x[e], max) : 0ull;
      if (w != 0) last = first + e;
      local += w;
    }
    mass += local;
    if (segments) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) local += __shfl_xor_sync(0xffffffffu, local, o);
      const int32_t segment = first / kTile * kWarps + static_cast<int32_t>(warp);
      if (lane == 0 && segment < kCap) s.work.segment[segment] = local;
    }
  });
  Moments m;
  m.mass = SumU64(s, mass);
  m.last_positive = MaxI32(s, last);
  m.weighted_logit = 0.0;
  return m;
}

// The draw over the whole row by its segment sums.
__device__ inline int32_t DrawBySegments(RowShared& s, const Row& row, float max, const Moments& all, double u) {
  const unsigned long long target = static_cast<unsigned long long>(u * static_cast<double>(all.mass));
  const Crossing seg = FirstCrossing(
      s, row.Tiles() * kWarps, [&](int32_t i) { return s.work.segment[i]; }, target, true);
  if (seg.index == kNoId) return all.last_positive;
  if (threadIdx.x < 32) {
    const int32_t lane = threadIdx.x;
    const int32_t first = seg.index / kWarps * kTile + seg.index % kWarps * 32 * kItems + lane * kItems;
    float x[kItems];
    row.Load(first, x);
    unsigned long long v[kItems], local = 0;
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      v[e] = first + e < row.vocab ? FixedWeight(x[e], max) : 0ull;
      local += v[e];
    }
    unsigned long long inclusive = local;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long up = __shfl_up_sync(0xffffffffu, inclusive, o);
      if (lane >= o) inclusive += up;
    }
    unsigned long long c = seg.before + inclusive - local;
    int32_t hit = kNoId;
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      c += v[e];
      if (hit == kNoId && c > target) hit = first + e;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) hit = min(hit, __shfl_xor_sync(0xffffffffu, hit, o));
    if (lane == 0) s.result = hit;
  }
  __syncthreads();
  return s.result != kNoId ? s.result : all.last_positive;
}

}  // namespace sampling
}  // namespace cuda
}  // namespace tg
