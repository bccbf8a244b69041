// SiLU(gate) * up over the fused gate/up projection's output, in f32, 8 elements per
// thread with 16-byte accesses where the rows allow (a prefill's rows are bandwidth-bound:
// 2-byte accesses ran at less than half of it).
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/pdl.cuh"

namespace tg {
namespace cuda {
namespace {

template <typename T>
__global__ void SiluMulKernel(const T* gate_up, int64_t inter, T* out) {
  PdlStartShortKernel();
  const int64_t r = blockIdx.y;
  const T* g = gate_up + r * 2 * inter;
  const T* u = g + inter;
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < inter; i += gridDim.x * blockDim.x) {
    out[r * inter + i] = FromFloat<T>(SiluMul(ToFloat(g[i]), ToFloat(u[i])));
  }
}

// The same over runs of 8: inter a multiple of 8 and both buffers 16-byte aligned.
template <typename T>
__global__ void SiluMulRunsKernel(const T* gate_up, int64_t inter, T* out) {
  PdlStartShortKernel();
  const int64_t r = blockIdx.y, runs = inter / 8;
  const uint4* g = reinterpret_cast<const uint4*>(gate_up + r * 2 * inter);
  const uint4* u = g + runs;
  uint4* o = reinterpret_cast<uint4*>(out + r * inter);
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < runs; i += gridDim.x * blockDim.x) {
    o[i] = SiluMul8<T>(g[i], u[i]);
  }
}

template <typename T>
void Launch(cudaStream_t stream, const void* gate_up, int64_t rows, int64_t inter, void* out) {
  const unsigned threads = 256;
  const bool runs = inter % 8 == 0 && Aligned(gate_up, 16) && Aligned(out, 16);
  const int64_t per_thread = runs ? 8 : 1;
  const unsigned blocks_x = static_cast<unsigned>((inter / per_thread + threads - 1) / threads);
  dim3 grid(blocks_x < 64 ? blocks_x : 64, static_cast<unsigned>(rows));
  LaunchWithPdl(PdlKernel::kSilu, runs ? SiluMulRunsKernel<T> : SiluMulKernel<T>, grid, dim3(threads), 0, stream,
                static_cast<const T*>(gate_up), inter, static_cast<T*>(out));
}

}  // namespace

void LaunchSiluMul(cudaStream_t stream, ElemType type, const void* gate_up, int64_t rows, int64_t inter, void* out) {
  if (rows <= 0) return;
  TG_DISPATCH_HALF(type, Launch, stream, gate_up, rows, inter, out);
  TG_CUDA_CHECK_LAUNCH("silu_mul");
}

}  // namespace cuda
}  // namespace tg
