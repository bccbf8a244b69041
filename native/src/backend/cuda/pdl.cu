// See pdl.cuh: whether launches on the current device use Programmatic Dependent Launch.
#include <cstdlib>
#include <string>

#include "backend/cuda/pdl.cuh"
#include "backend/cuda/per_device.h"

namespace tg {
namespace cuda {
namespace {

// Compiled with the same architectures as every other kernel of the backend, so its
// attributes tell what code the device runs for all of them.
__global__ void PdlProbeKernel() {}

constexpr const char* kNames[] = {"gemv", "norm", "rope", "attention", "silu", "embedding"};
constexpr int kKernels = sizeof(kNames) / sizeof(kNames[0]);

// Bit i: kernel i may launch with PDL. Unset means none: on an H200 it made batch-1 decode
// steps slower with the attention kernel in the set and no faster without it (README.md).
unsigned AllowedByEnvironment() {
  static const unsigned allowed = [] {
    const unsigned all = (1u << kKernels) - 1;
    const char* env = std::getenv("TEXT_GEN_PDL");
    if (!env) return 0u;
    const std::string list = std::string(",") + env + ",";
    if (list == ",0,") return 0u;
    if (list == ",1," || list == ",all,") return all;
    unsigned bits = 0;
    for (int i = 0; i < kKernels; ++i) {
      if (list.find(std::string(",") + kNames[i] + ",") != std::string::npos) bits |= 1u << i;
    }
    return bits;
  }();
  return allowed;
}

bool DeviceRunsPdl(int device) {
  int major = 0;
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 9) return false;
  // A build without an sm_90 target runs on Hopper from older PTX, where PdlWaitForPrevious
  // compiles to nothing: launching early would then race the previous kernel.
  cudaFuncAttributes attributes;
  TG_CUDA_CHECK(cudaFuncGetAttributes(&attributes, PdlProbeKernel));
  return attributes.ptxVersion >= 90;
}

}  // namespace

bool PdlEnabled(PdlKernel which) {
  if (!(AllowedByEnvironment() & (1u << static_cast<int>(which)))) return false;
  static PerDeviceFlag runs_pdl;
  return runs_pdl.Get(DeviceRunsPdl);
}

}  // namespace cuda
}  // namespace tg
