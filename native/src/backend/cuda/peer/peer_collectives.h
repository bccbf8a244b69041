// One-shot collectives between the GPUs of one machine that can read each other's
// memory (NVLink, or PCIe peer access). Each rank stages its input in a region its
// peers have mapped, the ranks meet at a flag barrier, and each rank reads what it
// needs straight out of its peers' regions: one kernel and one round trip over the
// link. Small all-reduces instead write into the peers' regions, the data flagged
// line by line, so a rank waits for one one-way trip (the low-latency protocol). A
// decode step's all-reduces are small (8 KB per call at batch 1 on an 8B model, 65
// calls per token), and there NCCL's ring protocol, built for bandwidth, costs several
// times more; NCCL keeps the large messages (peer_communicator.h).
//
// The kernels keep their state in device memory (a barrier counter per CTA), so they
// can be captured into CUDA graphs and replayed any number of times. Every rank must
// launch the same sequence of collectives, and one rank's collectives must run in
// stream order (never two at once): the barrier of call n + 1 is what tells a rank
// that its peers have finished reading the staging buffer call n - 1 used.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/elem_type.h"

namespace tg {
namespace cuda {

constexpr int kPeerMaxRanks = 8;
// CTAs of a group's peer collectives unless the group says otherwise (PeerGroup::ctas), and
// the most a group may run (its flags and barrier counters are sized for these).
constexpr int kPeerCtas = 48;
constexpr int kPeerMaxCtas = 256;
// The largest message per rank of the low-latency protocol: a decode step's all-reduces
// (32 bf16 rows of a 4,096-wide model, 16 of an 8,192-wide one). Every region holds a
// mailbox of twice this per possible peer and call parity (8 MB).
constexpr size_t kPeerLlPayloadBytes = size_t{256} << 10;

// One rank's view of the group.
struct PeerGroup {
  int rank = 0;
  int world_size = 0;
  char* regions[kPeerMaxRanks] = {};  // every rank's region (PeerBuffers::region), as this process maps it
  uint32_t* counters = nullptr;       // this rank's barrier counters, one per CTA: device memory, zeroed once
  size_t staging_bytes = 0;
  // CTAs of every collective of the group: the same on every rank and for every call of the
  // group's buffers, so that each CTA's barrier counter counts the same calls everywhere. More
  // CTAs give a large message more reads in flight; all of them must be able to run at once.
  int ctas = kPeerCtas;
  // Messages up to kPeerLlPayloadBytes per rank take the low-latency protocol (peer_collectives.cu);
  // false keeps every call on the staged one (A/B timings, and the tests of both).
  bool low_latency = true;
  // Past the low-latency protocol, the fused all-reduce + RMSNorm takes the two-shot protocol in
  // groups of at least this many ranks (with two, it reads no less than the staged one). Tests
  // lower it to 2 to run it on two GPUs; above kPeerMaxRanks every such call stays staged (A/B).
  int two_shot_min_world = 3;
};

// How a fused all-reduce + RMSNorm moves its rows (peer_collectives.cu's head).
enum class PeerProtocol { kLowLatency, kStaged, kTwoShot };

// One rank's own state, zeroed: the region it shares (the barrier flags, two staging
// buffers of `staging_bytes` each, which consecutive calls alternate between, then the
// low-latency protocol's mailboxes) and its per-CTA barrier counters. The region is one
// cudaMalloc allocation, as CUDA IPC exports.
struct PeerBuffers {
  explicit PeerBuffers(size_t staging_bytes);
  // The group as this rank sees it, with its own region in place; the caller adds the peers'.
  PeerGroup Group(int rank, int world_size) const;
  // For tests of the count's wrap: as if `calls` calls had been made (every rank's buffers
  // set alike, none in flight).
  void SetCallCount(uint32_t calls);
  size_t staging_bytes;
  DeviceBuffer region, counters;
};

// True when the peer kernels can move `count` elements of `type` per rank between these
// buffers: a whole number of 16-byte vectors, at most staging_bytes, 16-byte aligned.
bool PeerCollectiveFits(const PeerGroup& group, size_t count, ElemType type, const void* a, const void* b);

// In place: data[i] = sum over ranks of data[i], summed in rank order in f32 on every
// rank (so every rank gets the same bits). Both launchers throw std::invalid_argument
// unless PeerCollectiveFits.
void LaunchPeerAllReduceSum(const PeerGroup& group, void* data, size_t count, ElemType type, cudaStream_t stream);

// The widest row the fused all-reduce + RMSNorm takes, in 16-byte vectors (16,384 bf16/fp16
// elements: 4 vectors per thread of its 512).
constexpr int64_t kPeerRowMaxVecs = 2048;

// True when LaunchPeerAllReduceAddRmsNorm can take these rows: bf16/fp16, hidden a multiple
// of 8 and at most kPeerRowMaxVecs · 8, rows · hidden within the staging buffer, 16-byte
// aligned operands.
bool PeerAllReduceAddRmsNormFits(const PeerGroup& group, int64_t rows, int64_t hidden, ElemType type,
                                 const void* delta, const float* residual, const float* weight, const void* out);

// The all-reduce of a row-parallel layer's output `delta` ([rows, hidden], `type`) fused with
// the residual add and RMSNorm after it, as LaunchAddRmsNorm (kernels.h) computes them:
// d = the rank-order f32 sum of every rank's delta, rounded to `type` (LaunchPeerAllReduceSum's
// bits); residual += d (f32); out = residual / sqrt(mean(residual²) + eps) · weight, in `type`.
// One kernel and one barrier instead of two kernels. `delta` is left as it was. Every rank gets
// the same bits. Throws std::invalid_argument unless PeerAllReduceAddRmsNormFits. The group
// must be its own (a PeerBuffers that no other peer collective uses: its rows sit at other
// staging positions than the all-reduce's slices).
void LaunchPeerAllReduceAddRmsNorm(const PeerGroup& group, const void* delta, float* residual, const float* weight,
                                   int64_t rows, int64_t hidden, float eps, ElemType type, void* out,
                                   cudaStream_t stream);

// The protocol LaunchPeerAllReduceAddRmsNorm takes for `rows` rows of `hidden` bf16/fp16 elements.
PeerProtocol PeerAllReduceAddRmsNormProtocol(const PeerGroup& group, int64_t rows, int64_t hidden);

// out = each rank's `count` elements of `in`, concatenated in rank order.
void LaunchPeerAllGather(const PeerGroup& group, const void* in, size_t count, ElemType type, void* out,
                         cudaStream_t stream);

}  // namespace cuda
}  // namespace tg
