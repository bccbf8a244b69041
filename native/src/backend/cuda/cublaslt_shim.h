// The part of cuBLASLt the CUDA backend uses, declared here and loaded at run
// time with dlopen, because CI builds every CUDA source without the cuBLAS
// headers or library. Names follow cublasLt.h with the `cublasLt`/`CUBLASLT_`
// prefixes dropped; every value and signature equals the real header's, which
// native/tests/cuda/shim_check.cc static_asserts on the GPU machine.
#pragma once
#include <cuda_runtime.h>
#include <library_types.h>  // cudaDataType_t: part of the CUDA runtime headers

#include <cstddef>
#include <cstdint>

namespace tg {
namespace cuda {
namespace lt {

// cublasStatus_t
enum Status : int { kStatusSuccess = 0 };

// cublasComputeType_t
enum ComputeType : int { kCompute32F = 68 };

// cublasOperation_t
enum Operation : int { kOpN = 0, kOpT = 1 };

// cublasLtMatmulDescAttributes_t
enum MatmulDescAttribute : int { kMatmulDescTransA = 3, kMatmulDescTransB = 4 };

// cublasLtMatmulPreferenceAttributes_t
enum MatmulPreferenceAttribute : int { kMatmulPrefMaxWorkspaceBytes = 1 };

// Opaque handles (pointers to structures the library owns).
struct Context;
using Handle = Context*;
struct MatmulDescOpaque;
using MatmulDesc = MatmulDescOpaque*;
struct MatrixLayoutOpaque;
using MatrixLayout = MatrixLayoutOpaque*;
struct MatmulPreferenceOpaque;
using MatmulPreference = MatmulPreferenceOpaque*;

// cublasLtMatmulAlgo_t
struct MatmulAlgo {
  uint64_t data[8];
};

// cublasLtMatmulHeuristicResult_t
struct MatmulHeuristicResult {
  MatmulAlgo algo;
  size_t workspaceSize;
  Status state;
  float wavesCount;
  int reserved[4];
};

using CreateFn = Status (*)(Handle* handle);
using DestroyFn = Status (*)(Handle handle);
using MatmulDescCreateFn = Status (*)(MatmulDesc* desc, ComputeType compute_type, cudaDataType_t scale_type);
using MatmulDescDestroyFn = Status (*)(MatmulDesc desc);
using MatmulDescSetAttributeFn = Status (*)(MatmulDesc desc, MatmulDescAttribute attr, const void* buf,
                                            size_t size_in_bytes);
using MatrixLayoutCreateFn = Status (*)(MatrixLayout* layout, cudaDataType_t type, uint64_t rows, uint64_t cols,
                                        int64_t ld);
using MatrixLayoutDestroyFn = Status (*)(MatrixLayout layout);
using MatmulPreferenceCreateFn = Status (*)(MatmulPreference* pref);
using MatmulPreferenceDestroyFn = Status (*)(MatmulPreference pref);
using MatmulPreferenceSetAttributeFn = Status (*)(MatmulPreference pref, MatmulPreferenceAttribute attr,
                                                  const void* buf, size_t size_in_bytes);
using MatmulAlgoGetHeuristicFn = Status (*)(Handle handle, MatmulDesc op_desc, MatrixLayout a_desc,
                                            MatrixLayout b_desc, MatrixLayout c_desc, MatrixLayout d_desc,
                                            MatmulPreference pref, int requested_algo_count,
                                            MatmulHeuristicResult heuristic_results_array[],
                                            int* return_algo_count);
using MatmulFn = Status (*)(Handle handle, MatmulDesc compute_desc, const void* alpha, const void* a,
                            MatrixLayout a_desc, const void* b, MatrixLayout b_desc, const void* beta, const void* c,
                            MatrixLayout c_desc, void* d, MatrixLayout d_desc, const MatmulAlgo* algo,
                            void* workspace, size_t workspace_size_in_bytes, cudaStream_t stream);

// The loaded library's entry points.
struct Api {
  CreateFn Create;
  DestroyFn Destroy;
  MatmulDescCreateFn MatmulDescCreate;
  MatmulDescDestroyFn MatmulDescDestroy;
  MatmulDescSetAttributeFn MatmulDescSetAttribute;
  MatrixLayoutCreateFn MatrixLayoutCreate;
  MatrixLayoutDestroyFn MatrixLayoutDestroy;
  MatmulPreferenceCreateFn MatmulPreferenceCreate;
  MatmulPreferenceDestroyFn MatmulPreferenceDestroy;
  MatmulPreferenceSetAttributeFn MatmulPreferenceSetAttribute;
  MatmulAlgoGetHeuristicFn MatmulAlgoGetHeuristic;
  MatmulFn Matmul;
};

// Loads cuBLASLt once per process: $TEXT_GEN_CUBLASLT if set, else
// libcublasLt.so.13, else libcublasLt.so.12. Throws std::runtime_error naming
// what was tried when none loads or a symbol is missing.
const Api& LoadApi();

// Throws std::runtime_error "cuBLASLt <what> failed with status N" unless kStatusSuccess.
void Check(Status status, const char* what);

}  // namespace lt
}  // namespace cuda
}  // namespace tg
