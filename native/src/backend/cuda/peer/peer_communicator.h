// A DeviceCommunicator that sends small messages through the peer kernels
// (peer_collectives.h) and everything else through the communicator it wraps (NCCL).
// The ranks map each other's staging regions with CUDA IPC, trading the handles over
// the wrapped communicator, so no new rendezvous is needed. When any rank cannot map
// a peer (no peer access between the GPUs, IPC refused), every rank keeps NCCL alone:
// the ranks agree on it, since a group that mixed the two paths would deadlock.
#pragma once
#include <memory>
#include <string>

#include "backend/cuda/nccl/device_communicator.h"

namespace tg {
namespace cuda {

// Every rank of `base`'s group calls this at the same point, on device `device`.
// TEXT_GEN_PEER_COLLECTIVES=0 returns `base` unchanged (for A/B timings). When the
// peers can't be mapped, returns `base` and sets *why_not (when given) to the reason.
std::unique_ptr<DeviceCommunicator> WithPeerCollectives(std::unique_ptr<DeviceCommunicator> base, int device,
                                                        std::string* why_not = nullptr);

}  // namespace cuda
}  // namespace tg
