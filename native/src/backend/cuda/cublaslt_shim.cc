// See cublaslt_shim.h.
#include "backend/cuda/cublaslt_shim.h"

#include <stdexcept>
#include <string>

#include "backend/cuda/shared_library.h"

namespace tg {
namespace cuda {
namespace lt {
namespace {

Api Load() {
  const SharedLibrary lib("TEXT_GEN_CUBLASLT", {"libcublasLt.so.13", "libcublasLt.so.12"});
  if (!lib.handle) {
    throw std::runtime_error("cannot load cuBLASLt (tried " + lib.tried +
                             "); install the CUDA toolkit's cuBLAS or set TEXT_GEN_CUBLASLT to libcublasLt.so");
  }
  Api api{};
  const std::string what = "cuBLASLt";
  lib.Resolve("cublasLtCreate", &api.Create, what);
  lib.Resolve("cublasLtDestroy", &api.Destroy, what);
  lib.Resolve("cublasLtMatmulDescCreate", &api.MatmulDescCreate, what);
  lib.Resolve("cublasLtMatmulDescDestroy", &api.MatmulDescDestroy, what);
  lib.Resolve("cublasLtMatmulDescSetAttribute", &api.MatmulDescSetAttribute, what);
  lib.Resolve("cublasLtMatrixLayoutCreate", &api.MatrixLayoutCreate, what);
  lib.Resolve("cublasLtMatrixLayoutDestroy", &api.MatrixLayoutDestroy, what);
  lib.Resolve("cublasLtMatmulPreferenceCreate", &api.MatmulPreferenceCreate, what);
  lib.Resolve("cublasLtMatmulPreferenceDestroy", &api.MatmulPreferenceDestroy, what);
  lib.Resolve("cublasLtMatmulPreferenceSetAttribute", &api.MatmulPreferenceSetAttribute, what);
  lib.Resolve("cublasLtMatmulAlgoGetHeuristic", &api.MatmulAlgoGetHeuristic, what);
  lib.Resolve("cublasLtMatmul", &api.Matmul, what);
  return api;  // the library stays loaded for the life of the process
}

}  // namespace

const Api& LoadApi() { return LoadedOncePerProcess(Load); }

void Check(Status status, const char* what) {
  if (status != kStatusSuccess) {
    throw std::runtime_error(std::string("cuBLASLt ") + what + " failed with status " +
                             std::to_string(static_cast<int>(status)));
  }
}

}  // namespace lt
}  // namespace cuda
}  // namespace tg
