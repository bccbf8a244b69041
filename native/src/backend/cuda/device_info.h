// What the CUDA runtime can see; compiled only when the build has the CUDA backend.
#pragma once

namespace tg {

// Number of CUDA devices, 0 on any error (no driver, no GPU).
int CudaDeviceCount();

}  // namespace tg
