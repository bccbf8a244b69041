// SiLU(gate) * up over the fused gate/up projection's output, in f32.
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

template <typename T>
void Launch(cudaStream_t stream, const void* gate_up, int64_t rows, int64_t inter, void* out) {
  const unsigned threads = 256;
  const unsigned blocks_x = static_cast<unsigned>((inter + threads - 1) / threads);
  dim3 grid(blocks_x < 64 ? blocks_x : 64, static_cast<unsigned>(rows));
  LaunchWithPdl(PdlKernel::kSilu, SiluMulKernel<T>, grid, dim3(threads), 0, stream, static_cast<const T*>(gate_up), inter,
                static_cast<T*>(out));
}

}  // namespace

void LaunchSiluMul(cudaStream_t stream, ElemType type, const void* gate_up, int64_t rows, int64_t inter, void* out) {
  if (rows <= 0) return;
  TG_DISPATCH_HALF(type, Launch, stream, gate_up, rows, inter, out);
  TG_CUDA_CHECK_LAUNCH("silu_mul");
}

}  // namespace cuda
}  // namespace tg
