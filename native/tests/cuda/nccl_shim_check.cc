// Compile-time check that backend/cuda/nccl/nccl_shim.h declares what the real
// nccl.h does: enum values, the unique id's layout, and each entry point's
// signature (parameter by parameter, up to the shim's own names for the same types).
// Needs nccl.h, which CI lacks: scripts/device-tp.sh compiles it on the GPU
// machine (a successful compile is the pass).
#include <nccl.h>

#include <type_traits>

#include "backend/cuda/nccl/nccl_shim.h"

namespace nc = tg::cuda::nccl;

// Enum values.
static_assert(int{nc::kSuccess} == int{ncclSuccess});
static_assert(int{nc::kInProgress} == int{ncclInProgress});
static_assert(int{nc::kFloat16} == int{ncclFloat16});
static_assert(int{nc::kFloat32} == int{ncclFloat32});
static_assert(int{nc::kBfloat16} == int{ncclBfloat16});
static_assert(int{nc::kSum} == int{ncclSum});

// Enums are passed as their own size (the shim's are int-based).
static_assert(sizeof(nc::Result) == sizeof(ncclResult_t));
static_assert(sizeof(nc::DataType) == sizeof(ncclDataType_t));
static_assert(sizeof(nc::RedOp) == sizeof(ncclRedOp_t));

// The unique id travels by value and over the wire as raw bytes.
static_assert(nc::kUniqueIdBytes == NCCL_UNIQUE_ID_BYTES);
static_assert(sizeof(nc::UniqueId) == sizeof(ncclUniqueId));
static_assert(alignof(nc::UniqueId) == alignof(ncclUniqueId));

// Signatures: each shim type mapped to the real one must give the real function's type.
template <typename T> struct Real { using type = T; };
template <> struct Real<nc::Result> { using type = ncclResult_t; };
template <> struct Real<nc::DataType> { using type = ncclDataType_t; };
template <> struct Real<nc::RedOp> { using type = ncclRedOp_t; };
template <> struct Real<nc::UniqueId> { using type = ncclUniqueId; };
template <> struct Real<nc::Comm> { using type = ncclComm_t; };
template <typename T> struct Real<T*> { using type = typename Real<T>::type*; };
template <typename T> struct Real<const T> { using type = const typename Real<T>::type; };
template <typename R, typename... A> struct Real<R (*)(A...)> {
  using type = typename Real<R>::type (*)(typename Real<A>::type...);
};

#define TG_SAME_SIGNATURE(shim, real) \
  static_assert(std::is_same_v<Real<nc::shim>::type, decltype(&real)>, #real " differs from the shim")

TG_SAME_SIGNATURE(GetVersionFn, ncclGetVersion);
TG_SAME_SIGNATURE(GetUniqueIdFn, ncclGetUniqueId);
TG_SAME_SIGNATURE(CommInitRankFn, ncclCommInitRank);
TG_SAME_SIGNATURE(CommDestroyFn, ncclCommDestroy);
TG_SAME_SIGNATURE(CommAbortFn, ncclCommAbort);
TG_SAME_SIGNATURE(CommGetAsyncErrorFn, ncclCommGetAsyncError);
TG_SAME_SIGNATURE(GetErrorStringFn, ncclGetErrorString);
TG_SAME_SIGNATURE(AllReduceFn, ncclAllReduce);
TG_SAME_SIGNATURE(AllGatherFn, ncclAllGather);

int main() { return 0; }
