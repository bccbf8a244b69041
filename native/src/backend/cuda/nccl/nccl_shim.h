// The part of NCCL the device communicator uses, declared here and loaded at run
// time with dlopen, because CI and the build machines have no nccl.h or libnccl.
// Names follow nccl.h with the `nccl` prefix dropped; every value and signature
// equals the real header's, which native/tests/cuda/nccl_shim_check.cc
// static_asserts on the GPU machine.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace tg {
namespace cuda {
namespace nccl {

// ncclResult_t (the values we name; the library may return others).
enum Result : int { kSuccess = 0, kInProgress = 7 };

// ncclDataType_t
enum DataType : int { kFloat16 = 6, kFloat32 = 7, kBfloat16 = 9 };

// ncclRedOp_t
enum RedOp : int { kSum = 0 };

// NCCL_UNIQUE_ID_BYTES and ncclUniqueId: passed by value to CommInitRank.
constexpr size_t kUniqueIdBytes = 128;
struct UniqueId {
  char internal[kUniqueIdBytes];
};

// ncclComm_t: a pointer to a structure the library owns.
struct CommOpaque;
using Comm = CommOpaque*;

using GetVersionFn = Result (*)(int* version);
using GetUniqueIdFn = Result (*)(UniqueId* unique_id);
using CommInitRankFn = Result (*)(Comm* comm, int nranks, UniqueId comm_id, int rank);
using CommDestroyFn = Result (*)(Comm comm);
using CommAbortFn = Result (*)(Comm comm);
using CommGetAsyncErrorFn = Result (*)(Comm comm, Result* async_error);
using GetErrorStringFn = const char* (*)(Result result);
using AllReduceFn = Result (*)(const void* sendbuff, void* recvbuff, size_t count, DataType datatype, RedOp op,
                               Comm comm, cudaStream_t stream);
using AllGatherFn = Result (*)(const void* sendbuff, void* recvbuff, size_t sendcount, DataType datatype, Comm comm,
                               cudaStream_t stream);

// The loaded library's entry points.
struct Api {
  GetVersionFn GetVersion;
  GetUniqueIdFn GetUniqueId;
  CommInitRankFn CommInitRank;
  CommDestroyFn CommDestroy;
  CommAbortFn CommAbort;
  CommGetAsyncErrorFn CommGetAsyncError;
  GetErrorStringFn GetErrorString;
  AllReduceFn AllReduce;
  AllGatherFn AllGather;
};

// Loads NCCL once per process: $TEXT_GEN_NCCL_LIBRARY if set, else libnccl.so.2,
// else libnccl.so. Throws std::runtime_error ("NCCL is needed for --num-shard > 1
// on GPUs and was not found: tried …") when none loads or a symbol is missing.
const Api& LoadApi();

// "2.28.3" from ncclGetVersion's code (2.8 and older: X*1000+Y*100+Z; later X*10000+Y*100+Z).
std::string VersionString(int code);

// Throws std::runtime_error "NCCL <what> failed: <ncclGetErrorString>" unless kSuccess.
void Check(Result result, const char* what);

}  // namespace nccl
}  // namespace cuda
}  // namespace tg
