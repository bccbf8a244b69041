// Hopper's bulk tensor copies (TMA, sm_90) and shared-memory barriers (mbarrier), for
// kernels that stream tiles: one thread issues a copy of a whole box of a tensor described
// by a CUtensorMap (tensor_map.h), the copy engine writes it into shared memory (swizzled
// as the map says) and counts its bytes on a barrier every consumer waits on; consumers
// arrive on another barrier when they are done with the buffer. No register or
// load-store-unit work per element, unlike cp.async.
#pragma once
#include <cstdint>

namespace tg {
namespace cuda {
namespace tma {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define TG_TMA_BUILT 1

// A phase completes after `arrivals` arrivals and, for a barrier copies count on, once
// the bytes announced (ArriveExpectBytes) have landed.
__device__ __forceinline__ void BarrierInit(uint32_t bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Makes barrier initialisation visible to the copy engine; a __syncthreads must follow.
__device__ __forceinline__ void FenceBarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// The phase now open completes when `bytes` more bytes have been copied (0: at once).
__device__ __forceinline__ void ArriveExpectBytes(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// One arrival, releasing this thread's earlier shared-memory accesses to the waiters.
__device__ __forceinline__ void Arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// Waits until the barrier's phase with this parity (0 for its first, 1 for its second, ...)
// has completed; the bytes copied in it are then visible to the waiting thread.
__device__ __forceinline__ void Wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// The box of the 2-D tensor `map` whose first element is at (column x, row y) into shared
// memory at `dst` (1,024-byte aligned for 128-byte swizzling), counted on `bar`.
__device__ __forceinline__ void Load2d(uint32_t dst, const void* map, int x, int y, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(bar)
      : "memory");
}

#endif

}  // namespace tma
}  // namespace cuda
}  // namespace tg
