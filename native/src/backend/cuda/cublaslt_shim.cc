// See cublaslt_shim.h.
#include "backend/cuda/cublaslt_shim.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

namespace tg {
namespace cuda {
namespace lt {
namespace {

template <typename Fn>
void Resolve(void* lib, const char* name, Fn* out, const std::string& path) {
  void* sym = dlsym(lib, name);
  if (!sym) throw std::runtime_error("cuBLASLt library " + path + " has no symbol " + name);
  *out = reinterpret_cast<Fn>(sym);
}

Api LoadOnce() {
  const char* env = std::getenv("TEXT_GEN_CUBLASLT");
  const char* candidates[] = {"libcublasLt.so.13", "libcublasLt.so.12"};
  std::string tried, path;
  void* lib = nullptr;
  if (env && *env) {
    path = env;
    lib = dlopen(env, RTLD_NOW | RTLD_LOCAL);
    tried = path + " (TEXT_GEN_CUBLASLT): " + (lib ? "" : dlerror());
  } else {
    for (const char* name : candidates) {
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib) {
        path = name;
        break;
      }
      tried += std::string(tried.empty() ? "" : "; ") + name + ": " + dlerror();
    }
  }
  if (!lib) {
    throw std::runtime_error("cannot load cuBLASLt (" + tried +
                             "); install the CUDA toolkit's cuBLAS or set TEXT_GEN_CUBLASLT to libcublasLt.so");
  }
  Api api{};
  Resolve(lib, "cublasLtCreate", &api.Create, path);
  Resolve(lib, "cublasLtDestroy", &api.Destroy, path);
  Resolve(lib, "cublasLtMatmulDescCreate", &api.MatmulDescCreate, path);
  Resolve(lib, "cublasLtMatmulDescDestroy", &api.MatmulDescDestroy, path);
  Resolve(lib, "cublasLtMatmulDescSetAttribute", &api.MatmulDescSetAttribute, path);
  Resolve(lib, "cublasLtMatrixLayoutCreate", &api.MatrixLayoutCreate, path);
  Resolve(lib, "cublasLtMatrixLayoutDestroy", &api.MatrixLayoutDestroy, path);
  Resolve(lib, "cublasLtMatmulPreferenceCreate", &api.MatmulPreferenceCreate, path);
  Resolve(lib, "cublasLtMatmulPreferenceDestroy", &api.MatmulPreferenceDestroy, path);
  Resolve(lib, "cublasLtMatmulPreferenceSetAttribute", &api.MatmulPreferenceSetAttribute, path);
  Resolve(lib, "cublasLtMatmulAlgoGetHeuristic", &api.MatmulAlgoGetHeuristic, path);
  Resolve(lib, "cublasLtMatmul", &api.Matmul, path);
  return api;  // the library stays loaded for the life of the process
}

}  // namespace

const Api& LoadApi() {
  // A failed load is retried on the next call (call_once rethrows and stays unset).
  static std::once_flag once;
  static Api api;
  std::call_once(once, [] { api = LoadOnce(); });
  return api;
}

void Check(Status status, const char* what) {
  if (status != kStatusSuccess) {
    throw std::runtime_error(std::string("cuBLASLt ") + what + " failed with status " +
                             std::to_string(static_cast<int>(status)));
  }
}

}  // namespace lt
}  // namespace cuda
}  // namespace tg
