// How long a kernel waits for a peer rank before it decides the peer is gone, for the peer
// collectives (peer_collectives.cu) and the GEMV's exchange between ranks (gemv.cu).
#pragma once

namespace tg {
namespace cuda {

// A peer that has not arrived after this long is gone (killed, or its process hung): the
// kernel stops the context with a message instead of spinning forever. Generous, because a
// rank may reach its first collective long before a slower peer has loaded.
constexpr unsigned long long kPeerWaitLimitNs = 600ull * 1000 * 1000 * 1000;

__device__ __forceinline__ unsigned long long GlobalTimerNs() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

}  // namespace cuda
}  // namespace tg
