// Error checking for CUDA runtime calls: every call's status becomes a
// std::runtime_error naming the call, so a failure reaches the user as a message.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace tg {
namespace cuda {

inline void Check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

}  // namespace cuda
}  // namespace tg

#define TG_CUDA_CHECK(call) ::tg::cuda::Check((call), #call)
// After a kernel launch: launch-configuration errors surface here.
#define TG_CUDA_CHECK_LAUNCH(name) ::tg::cuda::Check(cudaGetLastError(), name)
