// Dense GEMMs of the CUDA backend through cuBLASLt: out[m, n] = x[m, k] · w[n, k]ᵀ
// with W stored [N, K] as Hugging Face Linear layers are, f32 accumulation. The
// algorithm is chosen once per (m bucket, n, k, types): the first GEMM of a bucket
// times cuBLASLt's top heuristic candidates on its own operands and keeps the
// fastest (so the first step of each shape is slower; warm-up absorbs it).
// Descriptors are cached per exact shape.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/cuda/cublaslt_shim.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/elem_type.h"

namespace tg {
namespace cuda {

class Gemm {
 public:
  // Loads cuBLASLt (throws with a message when it is missing).
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // x and w in `in` (bf16 or fp16), out in `out` (`in` or f32); all row-major, contiguous.
  void Run(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k, ElemType in,
           ElemType out_type);

 private:
  struct Plan;
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int>;  // m, n, k, in, out
  Plan& PlanFor(int64_t m, int64_t n, int64_t k, ElemType in, ElemType out);
  std::vector<lt::MatmulAlgo> Candidates(const Plan& p, int count);
  lt::MatmulAlgo Tune(const Plan& p, cudaStream_t stream, const void* x, const void* w, void* out);
  lt::Status Launch(const Plan& p, const lt::MatmulAlgo& algo, cudaStream_t stream, const void* x, const void* w,
                    void* out);

  const lt::Api& api_;
  lt::Handle handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;        // exact shapes
  std::map<Key, lt::MatmulAlgo> algos_;               // by m bucket
};

}  // namespace cuda
}  // namespace tg
