// RoPE's arithmetic, shared by rope_kv_write.cu and the qkv GEMV that rotates its own
// output (GemvOutput::kRopeKvWrite), so that both give the same bits.
#pragma once

namespace tg {
namespace cuda {

// cos and sin of the angle position · inv_freq: the angle in f32, as the CPU backend forms
// it, then sincos in double (an f32 sincos of angles in the thousands loses digits).
__device__ __forceinline__ void RopeCosSin(float position, float inv_freq, float* c, float* s) {
  double sd, cd;
  sincos(static_cast<double>(position * inv_freq), &sd, &cd);
  *c = static_cast<float>(cd);
  *s = static_cast<float>(sd);
}

// Hugging Face's rotate_half on one pair: a at dim i, b at dim i + head_dim / 2. Each product
// rounded, then the sum, as the CPU backend computes it: written as a * c - b * s, the
// compiler fuses one product into an FMA or the other depending on the code around it, and
// two kernels with the same line gave different bits.
__device__ __forceinline__ void RopeRotate(float a, float b, float c, float s, float* lo, float* hi) {
  *lo = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  *hi = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

// Where token `offset` of cache block `block` keeps KV head h's row ([block][h][slot][d]).
__device__ __forceinline__ int64_t KvSlot(int64_t block, int64_t offset, int h, int kv_heads, int64_t block_size,
                                          int head_dim) {
  return ((block * kv_heads + h) * block_size + offset) * head_dim;
}

}  // namespace cuda
}  // namespace tg
