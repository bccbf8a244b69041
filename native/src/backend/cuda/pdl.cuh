// Programmatic Dependent Launch (Hopper, sm_90+): a kernel launched with LaunchWithPdl may
// start while the kernel before it in the stream is still finishing, so the gaps between
// the decode step's ~300 small kernels, where HBM would sit idle, shrink. The contract:
// such a kernel calls PdlWaitForPrevious() on every path before it reads anything an
// earlier kernel wrote and before its first global write (it may only do work that
// depends on nothing earlier before that, like the GEMV's first weight loads), and may
// call PdlLaunchNext() to let the next kernel be scheduled before it has finished.
// TEXT_GEN_PDL picks the kernels that launch this way: unset or 0 none (the default, see
// README.md for why), 1 or all every one, or a comma list of gemv, norm, rope, attention,
// silu, embedding.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace tg {
namespace cuda {

// Blocks until the previous kernel in the stream has completed and its writes are
// visible. Before sm_90 there is no early launch, so nothing to wait for.
__device__ __forceinline__ void PdlWaitForPrevious() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel's CTAs be scheduled once every CTA of this one has called this (or
// exited); they still wait for this kernel's completion before using its results.
__device__ __forceinline__ void PdlLaunchNext() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// The kernels that keep the contract, by the names TEXT_GEN_PDL uses.
enum class PdlKernel { kGemv, kNorm, kRope, kAttention, kSilu, kEmbedding };

// The start of a kernel that makes one short pass: its dependents may be scheduled at
// once (they take the SMs it leaves free and wait for its end), then it waits for its own
// predecessor.
__device__ __forceinline__ void PdlStartShortKernel() {
  PdlLaunchNext();
  PdlWaitForPrevious();
}

// True when `which` launches with PDL on the current device: compute capability 9 or later,
// kernels compiled for it (pdl.cu), and TEXT_GEN_PDL allowing it. Cached per device; safe
// while the stream captures a CUDA graph.
bool PdlEnabled(PdlKernel which);

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialization
// when PdlEnabled(which). Only for kernels that keep the contract at the top of this file.
template <typename... Params, typename... Args>
void LaunchWithPdl(PdlKernel which, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  if (PdlEnabled(which)) {
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
  TG_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace cuda
}  // namespace tg
