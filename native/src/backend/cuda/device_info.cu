// See device_info.h.
#include <cuda_runtime.h>

#include "backend/cuda/device_info.h"

namespace tg {

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

}  // namespace tg
