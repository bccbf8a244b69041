// DeviceCommunicator over NCCL (see device_communicator.h): one communicator per
// process, one GPU per rank, each collective a plain NCCL call on the caller's stream.
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/nccl/device_communicator.h"
#include "backend/cuda/nccl/nccl_shim.h"

namespace tg {
namespace cuda {
namespace {

nccl::DataType ToNccl(ElemType type) {
  switch (type) {
    case ElemType::kF32: return nccl::kFloat32;
    case ElemType::kBF16: return nccl::kBfloat16;
    case ElemType::kF16: return nccl::kFloat16;
  }
  throw std::logic_error("unknown ElemType");
}

class NcclCommunicator final : public DeviceCommunicator {
 public:
  NcclCommunicator(const nccl::Api& api, nccl::Comm comm, int rank, int world_size)
      : api_(api), comm_(comm), rank_(rank), world_size_(world_size) {}

  ~NcclCommunicator() override {
    // After a peer died the communicator reports an error, and Destroy (which
    // finalizes with the peers) could wait for it forever: abort it instead.
    nccl::Result async = nccl::kSuccess;
    if (api_.CommGetAsyncError(comm_, &async) != nccl::kSuccess || async != nccl::kSuccess) {
      api_.CommAbort(comm_);
    } else {
      api_.CommDestroy(comm_);
    }
  }

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  void AllReduceSum(void* data, size_t count, ElemType type, cudaStream_t stream) override {
    nccl::Check(api_.AllReduce(data, data, count, ToNccl(type), nccl::kSum, comm_, stream), "AllReduce");
  }

  void AllGather(const void* in, size_t count, ElemType type, void* out, cudaStream_t stream) override {
    nccl::Check(api_.AllGather(in, out, count, ToNccl(type), comm_, stream), "AllGather");
  }

 private:
  const nccl::Api& api_;
  nccl::Comm comm_;
  int rank_, world_size_;
};

}  // namespace

std::string NewNcclUniqueId() {
  const nccl::Api& api = nccl::LoadApi();
  nccl::UniqueId id{};
  nccl::Check(api.GetUniqueId(&id), "GetUniqueId");
  return std::string(id.internal, sizeof id.internal);
}

std::unique_ptr<DeviceCommunicator> MakeNcclCommunicator(const std::string& unique_id, int rank, int world_size,
                                                         int device) {
  if (unique_id.size() != nccl::kUniqueIdBytes) {
    throw std::runtime_error("the NCCL unique id must be " + std::to_string(nccl::kUniqueIdBytes) + " bytes, got " +
                             std::to_string(unique_id.size()));
  }
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw std::runtime_error("NCCL rank " + std::to_string(rank) + " is outside world size " +
                             std::to_string(world_size));
  }
  const nccl::Api& api = nccl::LoadApi();
  TG_CUDA_CHECK(cudaSetDevice(device));
  nccl::UniqueId id{};
  std::memcpy(id.internal, unique_id.data(), sizeof id.internal);
  nccl::Comm comm = nullptr;
  const nccl::Result result = api.CommInitRank(&comm, world_size, id, rank);
  if (result != nccl::kSuccess) {
    int version = 0;
    api.GetVersion(&version);
    const char* text = api.GetErrorString(result);
    throw std::runtime_error("NCCL " + nccl::VersionString(version) + " could not set up rank " +
                             std::to_string(rank) + " of " + std::to_string(world_size) + " on CUDA device " +
                             std::to_string(device) + ": " + (text ? text : "unknown error") +
                             " (each rank needs its own GPU; NCCL_DEBUG=INFO tells more)");
  }
  return std::make_unique<NcclCommunicator>(api, comm, rank, world_size);
}

}  // namespace cuda
}  // namespace tg
