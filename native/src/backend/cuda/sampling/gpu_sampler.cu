// The sampling kernel: sampling/sampler.cc's steps for one row per block.
//
//   penalties (repetition, frequency, presence; in place, from the slot's
//   sparse counts) -> temperature (in place) and max/argmax ->
//   mass -> top-k -> top-p -> typical-p -> inverse-CDF draw in id order ->
//   logprob of the choice -> top-n -> append the choice to the slot's counts
//
// Truncations and top-n never sort the row: they finish on a small candidate
// set in shared memory (candidates.cuh) when one bounds them, else each is a
// radix select (SelectPrefix) of the boundary of a kept prefix, the kept set
// staying implicit as thresholds tested on the fly. A row of 128256 logits is
// read once from device memory; the later passes hit L2 (64 rows are 33 MB).
#include <cmath>
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/sampling/gpu_sampler.h"
#include "backend/cuda/sampling/candidates.cuh"
#include "backend/cuda/sampling/penalties.cuh"
#include "backend/cuda/sampling/row_ops.cuh"

namespace tg {
namespace cuda {
namespace sampling {
namespace {

// sampler.cc's UniformFromSeed, bit for bit.
__device__ uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
__device__ double UniformFromSeed(uint64_t seed, uint64_t counter) {
  const uint64_t golden = 0x9E3779B97F4A7C15ULL;
  uint64_t x = Mix64(seed + golden);
  x = Mix64(x ^ (counter * golden + 0xD1B54A32D192ED03ULL));
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

// The lowest id of the largest value, and that value. With `scale`, first
// divides the row by the temperature in place (exactly, as the CPU does), so
// that the later passes read the values ready.
struct Best {
  float value;
  int32_t id;
};
__device__ Best ArgMax(RowShared& s, const Row& row, float* logits, bool scale, float temperature) {
  float best = -INFINITY, second = -INFINITY;
  int32_t best_id = kNoId;
  ForEachTile(row, [&](int32_t first, float* x) {
    if (scale && first < row.vocab) {
#pragma unroll
      for (int e = 0; e < kItems; ++e) x[e] = __fdiv_rn(x[e], temperature);  // no fast-math: the CPU's quotient
      if (row.vector_loads && first + kItems <= row.vocab) {
        *reinterpret_cast<float4*>(logits + first) = make_float4(x[0], x[1], x[2], x[3]);
      } else {
#pragma unroll
        for (int e = 0; e < kItems; ++e) {
          if (first + e < row.vocab) logits[first + e] = x[e];
        }
      }
    }
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      if (first + e >= row.vocab) continue;
      if (x[e] > best || best_id == kNoId) {
        second = best, best = x[e], best_id = first + e;
      } else if (x[e] > second) {
        second = x[e];
      }
    }
  });
  s.thread_max[2 * threadIdx.x] = best;
  s.thread_max[2 * threadIdx.x + 1] = second;
  const float max = BlockReduce(best, Max(), -INFINITY, reinterpret_cast<float*>(s.red.f64));
  return {max, MinI32(s, best == max ? best_id : kNoId)};
}

// The general path of the draw: the kept set of the warpers as radix-selected
// thresholds, then an inverse-CDF scan of the row.
__device__ int32_t Draw(RowShared& s, const Row& row, const GpuSamplingRow& p, float max, const Moments& all,
                        double u) {
  const bool top_k = p.top_k > 0 && p.top_k < row.vocab;
  const bool top_p = p.top_p < 1.0f;
  const bool typical = p.typical_p < 1.0f;
  Keys keys{0.0};
  Filter filter;
  Moments kept = all;
  if (top_k) {
    filter.by_value = SelectPrefix<false>(s, row, max, keys, filter, false, static_cast<unsigned long long>(p.top_k));
    kept = MeasureKept(s, row, max, keys, filter, false);
  }
  auto target_of = [](float fraction, unsigned long long mass) {
    const double t = ceil(static_cast<double>(fraction) * static_cast<double>(mass));
    return t < 1.0 ? 1ull : static_cast<unsigned long long>(t);
  };
  if (top_p) {
    filter.by_value = SelectPrefix<true>(s, row, max, keys, filter, false, target_of(p.top_p, kept.mass));
  }
  if (typical) {
    kept = MeasureKept(s, row, max, keys, filter, true);
    // Entropy of the kept set renormalised; typicality is the distance of a
    // logit from max + log(mass) - entropy, as in sampler.cc.
    const double mass = static_cast<double>(kept.mass) / kFixScale;
    const double log_mass = log(mass);
    const double entropy = log_mass - kept.weighted_logit / mass;
    keys.center = static_cast<double>(max) + log_mass - entropy;
    filter.by_typicality = SelectPrefix<true>(s, row, max, keys, filter, true, target_of(p.typical_p, kept.mass));
  }
  if (top_k || top_p || typical) kept = MeasureKept(s, row, max, keys, filter, false);
  const unsigned long long target = static_cast<unsigned long long>(u * static_cast<double>(kept.mass));
  const int32_t token = FirstReaching(
      s, row,
      [&](float x, int32_t id) { return filter.Keeps(keys, x, id) ? FixedWeight(x, max) : 0ull; }, target, true);
  return token != kNoId ? token : kept.last_positive;  // u * mass rounded up to the mass
}

// The general path of top-n: the n most likely ids (larger value, then lower
// id, first) and their logprobs.
__device__ void TopN(RowShared& s, const Row& row, int32_t n, float max, double log_sum, int32_t* ids,
                     float* logprobs) {
  const Keys keys{0.0};
  const Threshold keep =
      n >= row.vocab ? kKeepAll : SelectPrefix<false>(s, row, max, keys, Filter{}, false, static_cast<unsigned long long>(n));
  __syncthreads();
  if (threadIdx.x == 0) s.top_count = 0;
  __syncthreads();
  ForEachTile(row, [&](int32_t first, const float* x) {
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      if (first + e >= row.vocab || !keep.Keeps(keys.ByValue(x[e]), first + e)) continue;
      const int32_t at = atomicAdd(&s.top_count, 1);
      if (at < kMaxTopN) s.top_ids[at] = first + e, s.top_x[at] = x[e];
    }
  });
  __syncthreads();
  if (threadIdx.x == 0) {
    const int32_t count = min(s.top_count, n);
    for (int32_t i = 1; i < count; ++i) {  // insertion sort of at most 20
      const int32_t id = s.top_ids[i];
      const float x = s.top_x[i];
      int32_t j = i;
      for (; j > 0 && (s.top_x[j - 1] < x || (s.top_x[j - 1] == x && s.top_ids[j - 1] > id)); --j) {
        s.top_ids[j] = s.top_ids[j - 1], s.top_x[j] = s.top_x[j - 1];
      }
      s.top_ids[j] = id, s.top_x[j] = x;
    }
    for (int32_t i = 0; i < count; ++i) {
      ids[i] = s.top_ids[i];
      logprobs[i] = static_cast<float>(static_cast<double>(s.top_x[i]) - max - log_sum);
    }
  }
}

__global__ void __launch_bounds__(kThreads, 1) SampleKernel(float* logits, int32_t vocab, bool vector_loads,
                                                         const GpuSamplingRow* rows, GpuPenaltyView pen,
                                                         GpuSamplingOutputs out) {
  __shared__ RowShared s;
  const int32_t b = blockIdx.x;
  const GpuSamplingRow p = rows[b];
  float* row_logits = logits + static_cast<int64_t>(b) * vocab;
  const bool penalised = RowIsPenalised(p);
  if (penalised) ApplyPenalties(row_logits, vocab, p, pen);
  __syncthreads();

  const bool scale = p.samples && p.temperature > 0.0f && p.temperature != 1.0f;
  const Row row{row_logits, vocab, vector_loads};
  const int32_t top_n = min(min(max(p.top_n, 0), vocab), min(out.top_stride, kMaxTopN));
  int32_t* top_ids = out.top_ids + static_cast<int64_t>(b) * out.top_stride;
  float* top_logprobs = out.top_logprobs + static_cast<int64_t>(b) * out.top_stride;
  for (int32_t i = top_n + threadIdx.x; i < out.top_stride; i += kThreads) {
    top_ids[i] = -1, top_logprobs[i] = -INFINITY;
  }

  const Best best = ArgMax(s, row, row_logits, scale, p.temperature);  // syncs the block
  if (!isfinite(best.value)) {  // the CPU sampler throws here
    if (threadIdx.x == 0) out.tokens[b] = -1, out.logprobs[b] = NAN;
    for (int32_t i = threadIdx.x; i < top_n; i += kThreads) top_ids[i] = -1, top_logprobs[i] = NAN;
    return;
  }
  const bool truncates =
      p.samples && ((p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0f || p.typical_p < 1.0f);
  const bool segments = p.samples && !truncates && row.Tiles() * kWarps <= kCap;
  const Moments all = MeasureRow(s, row, best.value, segments);
  const double log_sum = log(static_cast<double>(all.mass) / kFixScale);
  if ((p.samples && truncates) || top_n > 0) SortThreadMaxima(s);
  int32_t token = best.id;
  if (p.samples) {
    const double u = UniformFromSeed(p.seed, p.generated_index);
    if (segments) {
      token = DrawBySegments(s, row, best.value, all, u);
    } else {
      token = truncates ? DrawFromCandidates(s, row, p, best.value, all.mass, u) : kNoId;
      if (token == kNoId) token = Draw(s, row, p, best.value, all, u);
    }
  }
  if (threadIdx.x == 0) {
    out.tokens[b] = token;
    out.logprobs[b] = static_cast<float>(static_cast<double>(row.Value(row_logits[token])) - best.value - log_sum);
  }
  if (top_n > 0 && !TopNFromCandidates(s, row, top_n, best.value, log_sum, top_ids, top_logprobs)) {
    TopN(s, row, top_n, best.value, log_sum, top_ids, top_logprobs);
  }
  if (penalised && p.observe) ObserveToken(s, pen, p.penalty_slot, token);
}

}  // namespace
}  // namespace sampling

bool GpuSamplerSupports(const SamplingParams& params, int32_t top_n) {
  return !params.watermark && top_n >= 0 && top_n <= kMaxTopN;
}

GpuSamplingRow MakeGpuSamplingRow(const SamplingParams& params, int64_t generated_index, int32_t top_n,
                                  int32_t penalty_slot, bool observe) {
  GpuSamplingRow row{};
  row.temperature = params.temperature;
  row.top_k = params.top_k;
  row.top_p = params.top_p;
  row.typical_p = params.typical_p;
  row.repetition_penalty = params.repetition_penalty;
  row.frequency_penalty = params.frequency_penalty;
  row.presence_penalty = params.presence_penalty;
  row.seed = params.seed;
  row.generated_index = static_cast<uint64_t>(generated_index);
  row.samples = params.Samples() ? 1 : 0;
  row.top_n = top_n;
  row.penalty_slot = penalty_slot;
  row.observe = observe ? 1 : 0;
  return row;
}

void LaunchGpuSampling(cudaStream_t stream, float* logits, int32_t batch, int32_t vocab, const GpuSamplingRow* rows,
                       GpuPenaltyView penalties, const GpuSamplingOutputs& out) {
  if (batch <= 0) return;
  if (vocab <= 0) throw std::invalid_argument("gpu sampler: vocab must be positive");
  if (out.top_stride < 0 || (out.top_stride > 0 && (out.top_ids == nullptr || out.top_logprobs == nullptr))) {
    throw std::invalid_argument("gpu sampler: top_stride > 0 needs top_ids and top_logprobs");
  }
  const bool vector_loads = vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  sampling::SampleKernel<<<batch, sampling::kThreads, 0, stream>>>(logits, vocab, vector_loads, rows, penalties, out);
  TG_CUDA_CHECK_LAUNCH("SampleKernel");
}

}  // namespace cuda
}  // namespace tg
