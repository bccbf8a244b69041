// The element types the CUDA backend stores: bf16 or fp16 for weights,
// activations and KV, float32 for norms, logits and the residual stream.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>

namespace tg {
namespace cuda {

enum class ElemType { kF32, kBF16, kF16 };

inline size_t ElemSize(ElemType t) { return t == ElemType::kF32 ? 4 : 2; }

// "bfloat16" / "float16" (EngineOptions.dtype) to the element type.
inline ElemType ParseComputeDtype(const std::string& dtype) {
  if (dtype == "bfloat16") return ElemType::kBF16;
  if (dtype == "float16") return ElemType::kF16;
  throw std::runtime_error("device cuda computes in bfloat16 or float16, not \"" + dtype +
                           "\"; pass dtype bfloat16 or float16");
}

}  // namespace cuda
}  // namespace tg
