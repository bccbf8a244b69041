// Helpers shared by the CUDA kernel tests (cuda_ops_test, prefill_attention_test,
// silu_gate_up_gemm_test, gemv_test), in the style of llama.cpp's test-backend-ops: seeded
// random inputs, host values rounded to the element type (so the CPU reference sees exactly
// what the GPU sees), device copies, NaN-poisoned outputs, and the relative L2 error.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/thread_pool.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/elem_type.h"
#include "backend/cuda/stopwatch.h"
#include "core/dtype.h"
#include "../test_util.h"

namespace tg {
namespace cuda {
namespace test {

// The CPU references' thread pool (every core), shared by a test binary's cases.
inline ThreadPool& CpuPool() {
  static ThreadPool pool(0);
  return pool;
}

inline std::mt19937& Rng() {
  static std::mt19937 gen(20261127);
  return gen;
}

inline std::vector<float> RandomFloats(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(Rng());
  return v;
}

inline int RandomInt(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(Rng()); }

inline const char* Name(ElemType t) { return t == ElemType::kBF16 ? "bf16" : t == ElemType::kF16 ? "fp16" : "f32"; }

// Tolerance on the relative L2 error of an output stored in `t`.
inline double Tolerance(ElemType t) { return t == ElemType::kBF16 ? 1e-2 : t == ElemType::kF16 ? 2e-3 : 1e-4; }

// Host values rounded to `t`, and their bits.
struct Rounded {
  std::vector<float> values;
  std::vector<uint16_t> bits;
};
inline Rounded Round(const std::vector<float>& v, ElemType t) {
  Rounded r{std::vector<float>(v.size()), std::vector<uint16_t>(v.size())};
  for (size_t i = 0; i < v.size(); ++i) {
    r.bits[i] = t == ElemType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
    r.values[i] = t == ElemType::kBF16 ? Bf16ToF32(r.bits[i]) : F16ToF32(r.bits[i]);
  }
  return r;
}

// SiLU(gate) · up of a gate/up projection ([rows, 2 inter], gate then up in each row), by the
// CPU backend, rounded to `t` as silu_mul.cu rounds it.
inline Rounded SiluMulOnHost(const Rounded& gate_up, int64_t rows, int64_t inter, ElemType t) {
  std::vector<float> act(static_cast<size_t>(rows * inter));
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up.values.data() + r * 2 * inter;
    cpu::SiluMul(g, g + inter, inter, act.data() + r * inter);
  }
  return Round(act, t);
}

// At least 16 bytes, so that kernels' 16-byte loads of a tiny tensor stay inside it.
inline DeviceBuffer ToDevice(const void* data, size_t bytes) {
  DeviceBuffer b(std::max<size_t>(bytes, 16));
  TG_CUDA_CHECK(cudaMemcpy(b.get(), data, bytes, cudaMemcpyHostToDevice));
  return b;
}
template <typename V>
DeviceBuffer ToDevice(const std::vector<V>& v) { return ToDevice(v.data(), v.size() * sizeof(V)); }

inline DeviceBuffer Poisoned(size_t bytes) {
  DeviceBuffer b(std::max<size_t>(bytes, 16));
  TG_CUDA_CHECK(cudaMemset(b.get(), 0xFF, b.bytes()));  // NaN in f32, bf16 and fp16
  return b;
}

// Reads `count` elements of type `t` back as floats (waits for the device).
inline std::vector<float> ToHost(const DeviceBuffer& b, size_t count, ElemType t) {
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> out(count);
  if (t == ElemType::kF32) {
    TG_CUDA_CHECK(cudaMemcpy(out.data(), b.get(), count * 4, cudaMemcpyDeviceToHost));
    return out;
  }
  std::vector<uint16_t> bits(count);
  TG_CUDA_CHECK(cudaMemcpy(bits.data(), b.get(), count * 2, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < count; ++i) out[i] = t == ElemType::kBF16 ? Bf16ToF32(bits[i]) : F16ToF32(bits[i]);
  return out;
}

// ‖a − b‖ / ‖b‖; NaN anywhere (an unwritten output) gives NaN, which fails every check.
inline double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// Median milliseconds of `reps` runs of `fn`, which enqueues on `stream` (the default
// stream unless given), after two warm-up runs.
template <typename Fn>
double TimeMs(int reps, Fn fn, cudaStream_t stream = nullptr) {
  Stopwatch watch;
  fn();
  fn();
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) ms.push_back(watch.Time(stream, fn));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Microseconds per call of `enqueue(i)`, i = 0..reps-1, captured into one CUDA graph (so
// host launch overhead is out of the picture, as in a captured decode step); the median
// of 7 launches of the graph (TimeMs).
template <typename Fn>
double GraphUs(cudaStream_t stream, int reps, Fn enqueue) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  TG_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < reps; ++i) enqueue(i);
  TG_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  TG_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const double ms = TimeMs(7, [&] { TG_CUDA_CHECK(cudaGraphLaunch(exec, stream)); }, stream);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return ms * 1000.0 / reps;
}

// A paged KV cache on the host mirroring the device layout [block][kv head][slot][d] (K and V apart).
struct HostCache {
  int64_t num_blocks, kv_heads, block_size, head_dim;
  int64_t Index(int64_t block, int64_t h, int64_t slot, int64_t i) const {
    return ((block * kv_heads + h) * block_size + slot) * head_dim + i;
  }
  int64_t size() const { return num_blocks * kv_heads * block_size * head_dim; }
};

// A sequence of a step: `rows` new tokens after `position` cached ones, at rows
// [row_start, row_start + rows) of q/out, blocks drawn without replacement from a shuffled pool.
struct TestSeq {
  int64_t position, rows, row_start;
  std::vector<int32_t> blocks;
};

std::vector<TestSeq> MakeSeqs(const std::vector<std::pair<int64_t, int64_t>>& shape, int64_t block_size,
                              int64_t* num_blocks, int64_t* total_rows = nullptr) {
  int64_t needed = 1;  // block 0 stays unused, as the router reserves it
  for (auto& [pos, rows] : shape) needed += (pos + rows + block_size - 1) / block_size;
  std::vector<int32_t> pool(needed - 1);
  std::iota(pool.begin(), pool.end(), 1);
  std::shuffle(pool.begin(), pool.end(), Rng());
  std::vector<TestSeq> seqs;
  size_t next = 0;
  int64_t row = 0;
  for (auto& [pos, rows] : shape) {
    TestSeq s{pos, rows, row, {}};
    for (int64_t b = 0; b < (pos + rows + block_size - 1) / block_size; ++b) s.blocks.push_back(pool[next++]);
    seqs.push_back(s);
    row += rows;
  }
  *num_blocks = needed;
  if (total_rows) *total_rows = row;
  return seqs;
}

// A kernel test's main(): without a CUDA device it says it skipped (and passes); with
// `--perf` it runs `perf` and returns its code; otherwise every test, then `summary`
// (which prints after the "N passed, N failed" line), returning non-zero on a failure.
inline int KernelTestMain(int argc, char** argv, const std::function<int()>& perf,
                          const std::function<void(int rc)>& summary) {
  if (CudaDeviceCount() == 0) {
    std::printf("skipped: no CUDA device visible\n0 passed, 0 failed\n");
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "--perf") return perf();
  const int rc = tgtest::RunAll();
  summary(rc);
  return rc;
}

}  // namespace test
}  // namespace cuda
}  // namespace tg
