// Timing the work a call enqueues on a stream, for the choices made by measuring (Gemm's GEMV
// or cuBLASLt and its algorithms, the MLP's gate/up path). Outside a capture only: it synchronises.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "backend/cuda/cuda_check.h"

namespace tg {
namespace cuda {

// Milliseconds that the work one call enqueues on a stream takes, measured with events.
class Stopwatch {
 public:
  Stopwatch() {
    TG_CUDA_CHECK(cudaEventCreate(&start_));
    const cudaError_t err = cudaEventCreate(&stop_);
    if (err != cudaSuccess) cudaEventDestroy(start_);
    Check(err, "cudaEventCreate");
  }
  ~Stopwatch() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  Stopwatch(const Stopwatch&) = delete;
  Stopwatch& operator=(const Stopwatch&) = delete;

  template <typename Fn>
  float Time(cudaStream_t stream, Fn&& enqueue) {
    TG_CUDA_CHECK(cudaEventRecord(start_, stream));
    enqueue();
    TG_CUDA_CHECK(cudaEventRecord(stop_, stream));
    TG_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// The best of two times of the work `a` enqueues and of `b`'s, alternated so that clock
// changes hit both alike.
template <typename A, typename B>
std::pair<float, float> BestTimes(cudaStream_t stream, A&& a, B&& b) {
  Stopwatch watch;
  float a_ms = std::numeric_limits<float>::infinity(), b_ms = a_ms;
  for (int round = 0; round < 2; ++round) {
    a_ms = std::min(a_ms, watch.Time(stream, a));
    b_ms = std::min(b_ms, watch.Time(stream, b));
  }
  return {a_ms, b_ms};
}

}  // namespace cuda
}  // namespace tg
