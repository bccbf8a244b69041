// Loads and stores of bf16/fp16 elements as float, for kernels templated on the element type.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace tg {
namespace cuda {

// Whether p is a multiple of `bytes` (a power of two): the launchers' check for their vector paths.
inline bool Aligned(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }

// SiLU(gate) · up in f32, the one formula of silu_mul.cu and the GEMV's fused input, with the
// fast exp and division (a few ulp of f32, far below the bf16/fp16 rounding that follows): the
// fused GEMV evaluates it in every CTA, where the precise versions cost more than its loads.
// For gate < -88, exp overflows to inf and the quotient is -0, as SiLU's limit is.
__device__ __forceinline__ float SiluMul(float gate, float up) { return __fdividef(gate, 1.0f + __expf(-gate)) * up; }

// Eight elements (16 bytes) of SiLU(gate) · up, each rounded to T: silu_mul.cu's runs and
// the GEMV's fused input, so the fused product equals SiLU-mul then the plain GEMV bit for bit.
template <typename T>
__device__ __forceinline__ uint4 SiluMul8(const uint4& gate, const uint4& up) {
  const T* g = reinterpret_cast<const T*>(&gate);
  const T* u = reinterpret_cast<const T*>(&up);
  uint4 r;
  T* o = reinterpret_cast<T*>(&r);
#pragma unroll
  for (int e = 0; e < 8; ++e) o[e] = FromFloat<T>(SiluMul(ToFloat(g[e]), ToFloat(u[e])));
  return r;
}

}  // namespace cuda
}  // namespace tg

// Calls FN<T>(args...) with T the CUDA type of `type` (bf16 or fp16).
#define TG_DISPATCH_HALF(type, FN, ...)                          \
  do {                                                           \
    if ((type) == ::tg::cuda::ElemType::kBF16) {                 \
      FN<__nv_bfloat16>(__VA_ARGS__);                            \
    } else if ((type) == ::tg::cuda::ElemType::kF16) {           \
      FN<__half>(__VA_ARGS__);                                   \
    } else {                                                     \
      throw std::runtime_error("kernel needs bf16 or fp16 data"); \
    }                                                            \
  } while (0)
