// The MLP's gate/up projection with SwiGLU in its epilogue, on Hopper (silu_gate_up_gemm.cu):
// act[m, n] = SiLU(x · gateᵀ) · (x · upᵀ) for w = [gate; up] ([2n, k], gate's n rows first,
// as cuda_weights.cc stores the fused projection). The same numbers as the cuBLASLt GEMM
// into a [m, 2n] buffer followed by LaunchSiluMul (gate and up rounded to the activation
// type, then SiLU-mul in f32, rounded once more), without that buffer: a prefill's largest
// intermediate never goes to memory and the SiLU-mul pass over it (a tenth of an 8k-token
// step's MLP time on an H100) disappears.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/elem_type.h"

namespace tg {
namespace cuda {

// True when LaunchSiluGateUpGemm computes this shape on the current device: an sm_90a build
// on compute capability 9.0 (PrefillWgmmaAvailable), bf16 or fp16, k a multiple of 64 and
// n of 128, x and w 16-byte aligned. m may be anything from 1.
bool SiluGateUpGemmTakes(const void* x, const void* w, int64_t m, int64_t n, int64_t k, ElemType type);

// act ([m, n], `type`) from x ([m, k]) and w ([2n, k]). Throws unless SiluGateUpGemmTakes.
// Allocates nothing and never synchronises.
void LaunchSiluGateUpGemm(cudaStream_t stream, ElemType type, const void* x, const void* w, void* act, int64_t m,
                          int64_t n, int64_t k);

}  // namespace cuda
}  // namespace tg
