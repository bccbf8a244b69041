// CUtensorMap descriptors for the bulk tensor copies of tma.cuh, made through the driver's
// cuTensorMapEncodeTiled, found at run time through the CUDA runtime (the addon links no
// driver library, so that it loads on machines without one).
#pragma once
#include <cuda.h>

#include <cstdint>

namespace tg {
namespace cuda {

// A row-major matrix of 16-bit elements, `rows` x `cols` at `base` (rows `cols` elements
// apart), copied in boxes of `box_rows` x 64 elements (128 bytes) with 128-byte swizzling:
// the layout of wgmma.cuh's tiles. Throws with the driver's code when it refuses.
CUtensorMap MakeSwizzled128RowsMap(const void* base, uint64_t rows, uint64_t cols, uint32_t box_rows);

}  // namespace cuda
}  // namespace tg
