// See nccl_shim.h.
#include "backend/cuda/nccl/nccl_shim.h"

#include <stdexcept>
#include <string>

#include "backend/cuda/shared_library.h"

namespace tg {
namespace cuda {
namespace nccl {
namespace {

Api Load() {
  const SharedLibrary lib("TEXT_GEN_NCCL_LIBRARY", {"libnccl.so.2", "libnccl.so"});
  if (!lib.handle) {
    throw std::runtime_error("NCCL is needed for --num-shard > 1 on GPUs and was not found: tried " + lib.tried +
                             "; install libnccl2 or set TEXT_GEN_NCCL_LIBRARY to the path of libnccl.so.2");
  }
  Api api{};
  const std::string what = "NCCL", hint = " (NCCL 2.4 or newer is needed)";
  lib.Resolve("ncclGetVersion", &api.GetVersion, what, hint);
  lib.Resolve("ncclGetUniqueId", &api.GetUniqueId, what, hint);
  lib.Resolve("ncclCommInitRank", &api.CommInitRank, what, hint);
  lib.Resolve("ncclCommDestroy", &api.CommDestroy, what, hint);
  lib.Resolve("ncclCommAbort", &api.CommAbort, what, hint);
  lib.Resolve("ncclCommGetAsyncError", &api.CommGetAsyncError, what, hint);
  lib.Resolve("ncclGetErrorString", &api.GetErrorString, what, hint);
  lib.Resolve("ncclAllReduce", &api.AllReduce, what, hint);
  lib.Resolve("ncclAllGather", &api.AllGather, what, hint);
  return api;  // the library stays loaded for the life of the process
}

}  // namespace

const Api& LoadApi() { return LoadedOncePerProcess(Load); }

std::string VersionString(int code) {
  const int major_unit = code < 10000 ? 1000 : 10000;  // NCCL_VERSION() changed its layout after 2.8
  return std::to_string(code / major_unit) + "." + std::to_string(code % major_unit / 100) + "." +
         std::to_string(code % 100);
}

void Check(Result result, const char* what) {
  if (result == kSuccess) return;
  const char* text = LoadApi().GetErrorString(result);
  throw std::runtime_error(std::string("NCCL ") + what + " failed: " + (text ? text : "unknown error") + " (code " +
                           std::to_string(static_cast<int>(result)) + ")");
}

}  // namespace nccl
}  // namespace cuda
}  // namespace tg
