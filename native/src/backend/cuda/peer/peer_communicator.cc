// See peer_communicator.h.
#include "backend/cuda/peer/peer_communicator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/peer/peer_collectives.h"

namespace tg {
namespace cuda {
namespace {

// Each staging buffer holds one rank's share of a message: the lm_head's f32 logits of
// 8 rows at TP 2 (8 × 64,128 × 4 bytes) fit.
constexpr size_t kStagingBytes = size_t{4} << 20;
// The fused all-reduce + RMSNorm's staging: 512 rows of an 8,192-wide model, a decode step's
// up to the largest graph bucket and past it.
constexpr size_t kRowsStagingBytes = size_t{8} << 20;
// A one-shot call makes every rank read (world size − 1) × the message over the link;
// past this NCCL's ring, which reads each byte about twice whatever the group size, wins.
// The two-shot protocol reads as little as the ring and takes the fused call up to its staging.
constexpr size_t kPeerReadLimit = size_t{2} << 20;
// The exchanging GEMVs' tiles (gemv.h's GemvExchange): one per 16 outputs of hidden, up to 8,192.
constexpr int kGemvExchangeCtas = 512;

class PeerCommunicator final : public DeviceCommunicator {
 public:
  PeerCommunicator(std::unique_ptr<DeviceCommunicator> base, PeerBuffers own, const PeerGroup& group,
                   PeerBuffers own_rows, const PeerGroup& rows_group, GemvExchangeBuffers gemv,
                   const GemvExchange& gemv_exchange, std::vector<void*> mapped)
      : base_(std::move(base)),
        own_(std::move(own)),
        group_(group),
        own_rows_(std::move(own_rows)),
        rows_group_(rows_group),
        gemv_(std::move(gemv)),
        gemv_exchange_(gemv_exchange),
        mapped_(std::move(mapped)) {
    fuse_norm_ = SwitchedOn("TEXT_GEN_FUSED_ALL_REDUCE");
    // TEXT_GEN_GEMV_EXCHANGE=0: the decode GEMVs store their products for the all-reduce kernel.
    exchange_in_gemv_ = SwitchedOn("TEXT_GEN_GEMV_EXCHANGE");
    // TEXT_GEN_PEER_LL=0: every peer call on the staged protocol (A/B timings).
    group_.low_latency = rows_group_.low_latency = SwitchedOn("TEXT_GEN_PEER_LL");
    // TEXT_GEN_PEER_TWO_SHOT=0: the fused call stays one-shot (staged), and NCCL takes it past
    // kPeerReadLimit (A/B timings).
    if (!SwitchedOn("TEXT_GEN_PEER_TWO_SHOT")) rows_group_.two_shot_min_world = kPeerMaxRanks + 1;
  }

  ~PeerCommunicator() override {
    for (void* p : mapped_) cudaIpcCloseMemHandle(p);
  }

  PeerCommunicator(const PeerCommunicator&) = delete;
  PeerCommunicator& operator=(const PeerCommunicator&) = delete;

  int rank() const override { return base_->rank(); }
  int world_size() const override { return base_->world_size(); }

  void AllReduceSum(void* data, size_t count, ElemType type, cudaStream_t stream) override {
    if (TakesPeerPath(count, type, data, data)) {
      LaunchPeerAllReduceSum(group_, data, count, type, stream);
    } else {
      base_->AllReduceSum(data, count, type, stream);
    }
  }

  void AllReduceAddRmsNorm(void* delta, float* residual, const float* weight, int64_t rows, int64_t hidden, float eps,
                           ElemType type, void* out, cudaStream_t stream) override {
    if (fuse_norm_ && FusedTakesPeerPath(rows, hidden, type, delta, residual, weight, out)) {
      LaunchPeerAllReduceAddRmsNorm(rows_group_, delta, residual, weight, rows, hidden, eps, type, out, stream);
    } else {
      DeviceCommunicator::AllReduceAddRmsNorm(delta, residual, weight, rows, hidden, eps, type, out, stream);
    }
  }

  const GemvExchange* gemv_exchange() const override { return exchange_in_gemv_ ? &gemv_exchange_ : nullptr; }

  void AllGather(const void* in, size_t count, ElemType type, void* out, cudaStream_t stream) override {
    if (TakesPeerPath(count, type, in, out)) {
      LaunchPeerAllGather(group_, in, count, type, out, stream);
    } else {
      base_->AllGather(in, count, type, out, stream);
    }
  }

 private:
  // Depends only on sizes and addresses every rank has alike, so all ranks take the same path.
  bool TakesPeerPath(size_t count, ElemType type, const void* a, const void* b) const {
    return PeerCollectiveFits(group_, count, type, a, b) && OneShotReadsFew(count * ElemSize(type));
  }
  bool OneShotReadsFew(size_t bytes) const {
    return static_cast<size_t>(group_.world_size - 1) * bytes <= kPeerReadLimit;
  }
  // The same for the fused all-reduce + RMSNorm, whose two-shot protocol has no read limit.
  bool FusedTakesPeerPath(int64_t rows, int64_t hidden, ElemType type, const void* delta, const float* residual,
                          const float* weight, const void* out) const {
    return PeerAllReduceAddRmsNormFits(rows_group_, rows, hidden, type, delta, residual, weight, out) &&
           (PeerAllReduceAddRmsNormProtocol(rows_group_, rows, hidden) != PeerProtocol::kStaged ||
            OneShotReadsFew(static_cast<size_t>(rows * hidden) * ElemSize(type)));
  }

  std::unique_ptr<DeviceCommunicator> base_;
  PeerBuffers own_;
  PeerGroup group_;
  // The fused all-reduce + RMSNorm's own flags, counters and staging (its rows sit at other
  // staging positions than the all-reduce's per-CTA slices, so they cannot share a region).
  PeerBuffers own_rows_;
  PeerGroup rows_group_;
  bool fuse_norm_ = true;      // TEXT_GEN_FUSED_ALL_REDUCE=0: the two calls (for A/B timings)
  GemvExchangeBuffers gemv_;
  GemvExchange gemv_exchange_;
  bool exchange_in_gemv_ = true;
  std::vector<void*> mapped_;  // the peers' regions, opened from their IPC handles
};

// What each rank tells the others: its three regions' IPC handles (the all-reduce's, the
// fused all-reduce + RMSNorm's and the GEMVs' mailboxes) and whether it has them. 256 bytes,
// traded as 64 f32 values (an all-gather copies their bits unchanged).
constexpr int kRegions = 3;
struct HandleRecord {
  cudaIpcMemHandle_t handles[kRegions];
  int32_t exported;
  int32_t sm_count;  // the rank's GPU's multiprocessors (RowsCtas)
  char pad[256 - kRegions * sizeof(cudaIpcMemHandle_t) - 2 * sizeof(int32_t)];
};
static_assert(sizeof(HandleRecord) == 256, "HandleRecord travels as 64 floats");

// A collective through `base` on a private stream, waited for.
class SetupStream {
 public:
  SetupStream() { TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~SetupStream() { cudaStreamDestroy(stream_); }
  SetupStream(const SetupStream&) = delete;
  SetupStream& operator=(const SetupStream&) = delete;
  cudaStream_t get() const { return stream_; }
  void Wait() const { TG_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

std::vector<HandleRecord> TradeHandles(DeviceCommunicator& base, const HandleRecord& mine, const SetupStream& s) {
  const int world = base.world_size();
  DeviceBuffer send(sizeof(HandleRecord)), recv(sizeof(HandleRecord) * world);
  TG_CUDA_CHECK(cudaMemcpy(send.get(), &mine, sizeof mine, cudaMemcpyHostToDevice));
  base.AllGather(send.get(), sizeof(HandleRecord) / 4, ElemType::kF32, recv.get(), s.get());
  s.Wait();
  std::vector<HandleRecord> all(static_cast<size_t>(world));
  TG_CUDA_CHECK(cudaMemcpy(all.data(), recv.get(), recv.bytes(), cudaMemcpyDeviceToHost));
  return all;
}

// The fused all-reduce + RMSNorm's CTAs: one per multiprocessor of the smallest GPU, where each
// of them runs at once (the rows kernels fit one 512-thread CTA an SM), so that a call of
// hundreds of rows (the eager decode steps of a large batch) spreads over the whole GPU; 48
// CTAs took 79 µs for 512 rows of 8,192 on 4× H200, 132 took 60 (cuda-notes run 127). Every
// rank computes the same count from the same records, as the per-CTA barriers need.
// TEXT_GEN_PEER_ROWS_CTAS=N sets it (A/B timings; the launcher gives every rank the same value).
int RowsCtas(const std::vector<HandleRecord>& all) {
  int sms = kPeerMaxCtas;
  for (const HandleRecord& r : all) sms = std::min(sms, std::max(1, static_cast<int>(r.sm_count)));
  return PositiveFromEnv("TEXT_GEN_PEER_ROWS_CTAS", sms, kPeerMaxCtas);
}

// The number of ranks that report `ok`.
int CountAgreeing(DeviceCommunicator& base, bool ok, const SetupStream& s) {
  DeviceBuffer flag(sizeof(float));
  const float one = ok ? 1.0f : 0.0f;
  TG_CUDA_CHECK(cudaMemcpy(flag.get(), &one, sizeof one, cudaMemcpyHostToDevice));
  base.AllReduceSum(flag.get(), 1, ElemType::kF32, s.get());
  s.Wait();
  float sum = 0.0f;
  TG_CUDA_CHECK(cudaMemcpy(&sum, flag.get(), sizeof sum, cudaMemcpyDeviceToHost));
  return static_cast<int>(sum + 0.5f);
}

}  // namespace

std::unique_ptr<DeviceCommunicator> WithPeerCollectives(std::unique_ptr<DeviceCommunicator> base, int device,
                                                        std::string* why_not) {
  auto decline = [&](std::string reason) {
    if (why_not) *why_not = std::move(reason);
    return std::move(base);
  };
  const int world = base->world_size(), rank = base->rank();
  if (!SwitchedOn("TEXT_GEN_PEER_COLLECTIVES")) return decline("TEXT_GEN_PEER_COLLECTIVES=0");
  if (world < 2 || world > kPeerMaxRanks) {
    return decline("peer collectives take 2 to " + std::to_string(kPeerMaxRanks) + " ranks");
  }
  TG_CUDA_CHECK(cudaSetDevice(device));
  SetupStream stream;

  // Zeroed before the handles travel: no peer writes a flag before it has this rank's handle.
  PeerBuffers own(kStagingBytes), own_rows(kRowsStagingBytes);
  GemvExchangeBuffers gemv(world, kGemvExchangeCtas);
  TG_CUDA_CHECK(cudaDeviceSynchronize());

  HandleRecord mine{};
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&mine.sm_count, cudaDevAttrMultiProcessorCount, device));
  std::string problem;
  if (cudaIpcGetMemHandle(&mine.handles[0], own.region.get()) == cudaSuccess &&
      cudaIpcGetMemHandle(&mine.handles[1], own_rows.region.get()) == cudaSuccess &&
      cudaIpcGetMemHandle(&mine.handles[2], gemv.mailboxes.get()) == cudaSuccess) {
    mine.exported = 1;
  } else {
    problem = std::string("rank ") + std::to_string(rank) + " cannot export memory: " +
              cudaGetErrorString(cudaGetLastError());
  }
  // Every rank makes the same two collectives whatever happened, so none waits alone.
  const std::vector<HandleRecord> all = TradeHandles(*base, mine, stream);

  PeerGroup group = own.Group(rank, world), rows_group = own_rows.Group(rank, world);
  rows_group.ctas = RowsCtas(all);
  GemvExchange exchange = gemv.View(rank);
  char** regions[kRegions] = {group.regions, rows_group.regions, exchange.mailboxes};
  std::vector<void*> mapped;
  for (int r = 0; r < world && problem.empty(); ++r) {
    if (r == rank) continue;
    if (!all[static_cast<size_t>(r)].exported) {
      problem = "rank " + std::to_string(r) + " cannot export memory";
      break;
    }
    for (int h = 0; h < kRegions && problem.empty(); ++h) {
      void* peer = nullptr;
      const cudaError_t status =
          cudaIpcOpenMemHandle(&peer, all[static_cast<size_t>(r)].handles[h], cudaIpcMemLazyEnablePeerAccess);
      if (status != cudaSuccess) {
        cudaGetLastError();  // not sticky: clear it so later calls don't report it
        problem = "rank " + std::to_string(rank) + " cannot map rank " + std::to_string(r) +
                  "'s memory: " + cudaGetErrorString(status);
        break;
      }
      mapped.push_back(peer);
      regions[h][r] = static_cast<char*>(peer);
    }
  }
  const int agreeing = CountAgreeing(*base, problem.empty(), stream);
  if (agreeing != world) {
    for (void* p : mapped) cudaIpcCloseMemHandle(p);
    return decline(problem.empty() ? std::to_string(world - agreeing) + " other rank(s) cannot map their peers"
                                   : problem);
  }
  return std::make_unique<PeerCommunicator>(std::move(base), std::move(own), group, std::move(own_rows), rows_group,
                                            std::move(gemv), exchange, std::move(mapped));
}

}  // namespace cuda
}  // namespace tg
