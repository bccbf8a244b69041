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

// Load2d's box written to the same shared-memory offset of every CTA of the cluster in
// `cta_mask` (bit i: the CTA of rank i), each counting the bytes on its barrier at `bar`'s offset.
__device__ __forceinline__ void Load2dMulticast(uint32_t dst, const void* map, int x, int y, uint32_t bar,
                                                uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, "
      "%3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(bar), "h"(cta_mask)
      : "memory");
}

// This CTA's rank in its cluster.
__device__ __forceinline__ uint32_t ClusterCtaRank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}

// One arrival on the barrier at `bar`'s offset in the cluster's CTA of rank `cta` (this one
// included). Only for barriers that guard shared memory read by the asynchronous proxy
// (wgmma, completed before the arrival), so no memory ordering is asked of it.
__device__ __forceinline__ void ArriveCluster(uint32_t bar, uint32_t cta) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(bar), "r"(cta));
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
}

// Every thread of every CTA of the cluster meets here (warps converged: .aligned).
__device__ __forceinline__ void ClusterSync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

#endif

}  // namespace tma
}  // namespace cuda
}  // namespace tg
