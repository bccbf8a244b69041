// Compile-time check that backend/cuda/cublaslt_shim.h declares what the real
// cublasLt.h does: enum values, struct layouts, and each entry point's signature
// (parameter by parameter, up to the shim's own names for the same types).
// Needs the cuBLAS headers, which CI lacks: scripts/device-run.sh compiles it on
// the GPU machine (a successful compile is the pass).
#include <cublasLt.h>

#include <cstddef>
#include <type_traits>

#include "backend/cuda/cublaslt_shim.h"

namespace lt = tg::cuda::lt;

// Enum values.
static_assert(int{lt::kStatusSuccess} == int{CUBLAS_STATUS_SUCCESS});
static_assert(int{lt::kCompute32F} == int{CUBLAS_COMPUTE_32F});
static_assert(int{lt::kOpN} == int{CUBLAS_OP_N} && int{lt::kOpT} == int{CUBLAS_OP_T});
static_assert(int{lt::kMatmulDescTransA} == int{CUBLASLT_MATMUL_DESC_TRANSA});
static_assert(int{lt::kMatmulDescTransB} == int{CUBLASLT_MATMUL_DESC_TRANSB});
static_assert(int{lt::kMatmulPrefMaxWorkspaceBytes} == int{CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES});

// Enums are passed as their own size (the shim's are int-based).
static_assert(sizeof(lt::Status) == sizeof(cublasStatus_t));
static_assert(sizeof(lt::ComputeType) == sizeof(cublasComputeType_t));
static_assert(sizeof(lt::Operation) == sizeof(cublasOperation_t));
static_assert(sizeof(lt::MatmulDescAttribute) == sizeof(cublasLtMatmulDescAttributes_t));
static_assert(sizeof(lt::MatmulPreferenceAttribute) == sizeof(cublasLtMatmulPreferenceAttributes_t));

// Structures the caller allocates.
static_assert(sizeof(lt::MatmulAlgo) == sizeof(cublasLtMatmulAlgo_t));
static_assert(alignof(lt::MatmulAlgo) == alignof(cublasLtMatmulAlgo_t));
static_assert(sizeof(lt::MatmulHeuristicResult) == sizeof(cublasLtMatmulHeuristicResult_t));
static_assert(offsetof(lt::MatmulHeuristicResult, workspaceSize) ==
              offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize));
static_assert(offsetof(lt::MatmulHeuristicResult, state) == offsetof(cublasLtMatmulHeuristicResult_t, state));
static_assert(offsetof(lt::MatmulHeuristicResult, wavesCount) ==
              offsetof(cublasLtMatmulHeuristicResult_t, wavesCount));

// Signatures: each shim type mapped to the real one must give the real function's type.
template <typename T> struct Real { using type = T; };
template <> struct Real<lt::Status> { using type = cublasStatus_t; };
template <> struct Real<lt::ComputeType> { using type = cublasComputeType_t; };
template <> struct Real<lt::Operation> { using type = cublasOperation_t; };
template <> struct Real<lt::MatmulDescAttribute> { using type = cublasLtMatmulDescAttributes_t; };
template <> struct Real<lt::MatmulPreferenceAttribute> { using type = cublasLtMatmulPreferenceAttributes_t; };
template <> struct Real<lt::Handle> { using type = cublasLtHandle_t; };
template <> struct Real<lt::MatmulDesc> { using type = cublasLtMatmulDesc_t; };
template <> struct Real<lt::MatrixLayout> { using type = cublasLtMatrixLayout_t; };
template <> struct Real<lt::MatmulPreference> { using type = cublasLtMatmulPreference_t; };
template <> struct Real<lt::MatmulAlgo> { using type = cublasLtMatmulAlgo_t; };
template <> struct Real<lt::MatmulHeuristicResult> { using type = cublasLtMatmulHeuristicResult_t; };
template <typename T> struct Real<T*> { using type = typename Real<T>::type*; };
template <typename T> struct Real<const T> { using type = const typename Real<T>::type; };
template <typename R, typename... A> struct Real<R (*)(A...)> {
  using type = typename Real<R>::type (*)(typename Real<A>::type...);
};

#define TG_SAME_SIGNATURE(shim, real) \
  static_assert(std::is_same_v<Real<lt::shim>::type, decltype(&real)>, #real " differs from the shim")

TG_SAME_SIGNATURE(CreateFn, cublasLtCreate);
TG_SAME_SIGNATURE(DestroyFn, cublasLtDestroy);
TG_SAME_SIGNATURE(MatmulDescCreateFn, cublasLtMatmulDescCreate);
TG_SAME_SIGNATURE(MatmulDescDestroyFn, cublasLtMatmulDescDestroy);
TG_SAME_SIGNATURE(MatmulDescSetAttributeFn, cublasLtMatmulDescSetAttribute);
TG_SAME_SIGNATURE(MatrixLayoutCreateFn, cublasLtMatrixLayoutCreate);
TG_SAME_SIGNATURE(MatrixLayoutDestroyFn, cublasLtMatrixLayoutDestroy);
TG_SAME_SIGNATURE(MatmulPreferenceCreateFn, cublasLtMatmulPreferenceCreate);
TG_SAME_SIGNATURE(MatmulPreferenceDestroyFn, cublasLtMatmulPreferenceDestroy);
TG_SAME_SIGNATURE(MatmulPreferenceSetAttributeFn, cublasLtMatmulPreferenceSetAttribute);
TG_SAME_SIGNATURE(MatmulAlgoGetHeuristicFn, cublasLtMatmulAlgoGetHeuristic);
TG_SAME_SIGNATURE(MatmulFn, cublasLtMatmul);

int main() { return 0; }
