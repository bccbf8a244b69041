// Whether work enqueued on a stream now goes into a CUDA graph being captured, where
// allocating, synchronising and event timing are not allowed and an event record becomes a
// node that every replay runs (gemm.cc, step_profiler.cc).
#pragma once
#include <cuda_runtime.h>

#include "backend/cuda/cuda_check.h"

namespace tg {
namespace cuda {

inline bool IsCapturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t err = cudaStreamIsCapturing(stream, &status);
  if (err == cudaErrorStreamCaptureImplicit) {  // the legacy stream while another stream captures
    cudaGetLastError();
    return true;
  }
  Check(err, "cudaStreamIsCapturing");
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace cuda
}  // namespace tg
