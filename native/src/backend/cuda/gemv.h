// The GEMV kernel for decode batches: out[m, n] = (or +=) x[m, k] · w[n, k]ᵀ for m ≤ 16 rows,
// W stored [N, K] like Hugging Face Linear layers, f32 accumulation. A decode step
// reads every weight once and does almost no arithmetic per byte, so this kernel is
// built to stream W at memory bandwidth; Gemm (gemm.h) picks it or cuBLASLt per shape.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/elem_type.h"

namespace tg {
namespace cuda {

// The most rows of x one launch handles (two N tiles of the tensor-core mma it uses).
constexpr int64_t kGemvMaxRows = 16;

// What x holds: the product's input itself, or the MLP's gate/up projection ([m, 2k], gate
// then up in each row), whose SiLU(gate) · up (as silu_mul.cu rounds it) is the input. The
// second folds SiLU-mul into the down projection's loads: one kernel less per layer.
enum class GemvInput { kPlain, kSiluOfGateUp };

// What happens to out: the product is stored, or added to what out holds (an f32 residual
// stream, so that a projection joins it unrounded and the norm after it has nothing to add).
// Each output element belongs to one thread, so adding needs no atomics.
// kSiluOfHalves: w is the MLP's gate/up projection, [2n, k] (n gate rows, then n up rows),
// and out[m, n] = SiLU(x · gateᵀ) · (x · upᵀ), each product rounded to `in` first: the bits the
// gate/up store and silu_mul.cu give, without the [m, 2n] buffer, and the down projection
// after it takes a plain input. A CTA takes 8 gate rows and the 8 up rows of the same outputs.
enum class GemvOutput { kStore, kAddTo, kSiluOfHalves };

// True when LaunchGemv computes this product: 1 ≤ m ≤ kGemvMaxRows, k a multiple of 8,
// x and w 16-byte aligned (so every row of both is), `in` bf16 or fp16, and `out`
// - kStore of kPlain input: `in` or f32;
// - kStore of kSiluOfGateUp input: `in` (not built for f32: the storing down projection writes `in`);
// - kAddTo: f32;
// - kSiluOfHalves of kPlain input: `in`, with n (the output's width, half of w's rows) a multiple of 8.
bool GemvSupports(const void* x, const void* w, int64_t m, int64_t n, int64_t k, ElemType in, ElemType out,
                  GemvInput input = GemvInput::kPlain, GemvOutput output = GemvOutput::kStore);

// out (row-major [m, n], in `out_type`) = x ([m, k], `in`) · w ([n, k], `in`)ᵀ, or += for kAddTo
// (for kSiluOfHalves w is [2n, k] and out the SiLU-mul of its halves' products, [m, n]).
// Throws std::invalid_argument when !GemvSupports.
// Allocates nothing and never synchronises, so it may run while `stream` captures a CUDA graph.
void LaunchGemv(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
                ElemType in, ElemType out_type, GemvInput input = GemvInput::kPlain,
                GemvOutput output = GemvOutput::kStore);

}  // namespace cuda
}  // namespace tg
