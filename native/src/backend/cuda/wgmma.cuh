// Hopper warpgroup matrix multiply (wgmma, sm_90a) for the prefill attention and the MLP's
// gate/up GEMM: shared-memory matrix descriptors for 128-byte-swizzled tiles, m64n128k16 and
// m64n256k16 with f32 accumulators and B from shared memory, A from shared memory or
// registers, and the fences around them.
//
// The tile layout every descriptor here describes (PTX ISA, "Matrix Descriptor"; CUTLASS
// calls it the 128-byte swizzle atom): rows of 64 16-bit elements (128 bytes), a row's
// 16-byte chunk c stored at chunk c ^ (row % 8), 8 rows (1,024 bytes) per swizzle atom,
// atoms 1,024-byte aligned. A tile with wider rows (the head dim, 128) is stored as two
// such column halves one after the other ([half][rows][64]), so TileOffset below finds any
// chunk. The hardware applies the XOR from the address bits, so a k-step inside a
// 128-byte row is reached by adding its byte offset to the start address.
#pragma once
#include <cstdint>

namespace tg {
namespace cuda {
namespace wgmma {

// A swizzle atom: 8 rows of 128 bytes. Atoms start 1,024-byte aligned, the stride between
// 8-row groups of every K-major tile here.
constexpr uint32_t kAtomBytes = 1024;

// The first atom-aligned shared address at or after `addr` (the dynamic shared memory's start
// may lack the alignment: kernels ask for kAtomBytes more than their tiles need).
__device__ __forceinline__ uint32_t AtomAligned(uint32_t addr) { return (addr + kAtomBytes - 1) & ~(kAtomBytes - 1); }

// Byte offset of 16-byte chunk `chunk` (of the head dim) of row `row` in a tile of
// `rows` rows stored as column halves of 64 elements.
__device__ __forceinline__ uint32_t TileOffset(int rows, int row, int chunk) {
  return static_cast<uint32_t>((chunk >> 3) * rows * 128 + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// A descriptor of a 128-byte-swizzled operand at shared address `addr`. `leading` and
// `stride` are byte offsets: for a K-major operand (rows are M or N, 128 bytes along K)
// `stride` steps between 8-row groups and `leading` is unused; for an MN-major one (rows
// are K, 128 bytes along M or N) `leading` steps between 64-element column halves and
// `stride` between 8-row groups of K.
__device__ __forceinline__ uint64_t Descriptor(uint32_t addr, uint32_t leading, uint32_t stride) {
  constexpr uint64_t kSwizzle128 = 1;
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((leading >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((stride >> 4) & 0x3FFF) << 32) | (kSwizzle128 << 62);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TG_WGMMA_BUILT 1

// Orders this thread's register writes (accumulators, A fragments) before the next wgmma.
__device__ __forceinline__ void Fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void Commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most kPending of the warpgroup's committed groups are in flight.
template <int kPending>
__device__ __forceinline__ void Wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Makes the compiler treat v as written here: accumulators read after Wait() must not be
// read earlier, where the asm of the multiply left them apparently defined.
__device__ __forceinline__ void Touch(float& v) { asm volatile("" : "+f"(v)::"memory"); }
__device__ __forceinline__ void Touch(float (&d)[16][4]) {
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) Touch(d[j][e]);
  }
}
__device__ __forceinline__ void Touch(float (&d)[32][4]) {
#pragma unroll
  for (int j = 0; j < 32; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) Touch(d[j][e]);
  }
}
// A fragments in registers: kept intact until here, where a wgmma reading them has completed.
__device__ __forceinline__ void Touch(uint32_t (&a)[8][4]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[j][e])::"memory");
  }
}

#define TG_WGMMA_ACCUMULATORS(d) \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
  "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
  "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
  "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
  "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), \
  "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
  "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), \
  "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), \
  "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), \
  "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), \
  "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), \
  "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
  "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), \
  "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
  "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), \
  "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
#define TG_WGMMA_ACCUMULATOR_REGS \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// Each multiply below is one asm statement for both input types but for the type's name in
// the instruction: TG_WGMMA_AS(TYPE) is that statement, defined around each function's body,
// and TG_WGMMA_FOR_TYPE() issues it for the function's kBf16.
#define TG_WGMMA_FOR_TYPE()   \
  do {                        \
    if constexpr (kBf16) {    \
      TG_WGMMA_AS("bf16");    \
    } else {                  \
      TG_WGMMA_AS("f16");     \
    }                         \
  } while (0)

// d (64 x 128, this thread's part in the mma.m16n8 C layout of its warp's 16 rows, one
// [4] per 8 columns) = A·B (+ d when accumulate), A 64 x 16 and B 16 x 128 (as N x K,
// K-major) both from shared memory.
template <bool kBf16>
__device__ __forceinline__ void MmaSS(float (&d)[16][4], uint64_t a, uint64_t b, bool accumulate) {
#define TG_WGMMA_AS(TYPE)                                                       \
  asm volatile(                                                                 \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                              \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " "          \
      TG_WGMMA_ACCUMULATOR_REGS                                                 \
      ", %64, %65, p, 1, 1, 0, 0;\n}\n"                                         \
      : TG_WGMMA_ACCUMULATORS(d)                                                \
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)))
  TG_WGMMA_FOR_TYPE();
#undef TG_WGMMA_AS
}

// d = A·B (+ d when accumulate) with A (64 x 16) from registers, this thread's four in the mma.m16n8k16 A
// layout of its warp's 16 rows, and B (16 x 128) MN-major in shared memory (transposed
// on load: its rows are K).
template <bool kBf16>
__device__ __forceinline__ void MmaRSTransB(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b, bool accumulate) {
#define TG_WGMMA_AS(TYPE)                                                                   \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " "                      \
      TG_WGMMA_ACCUMULATOR_REGS                                                             \
      ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                       \
      : TG_WGMMA_ACCUMULATORS(d)                                                            \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate)))
  TG_WGMMA_FOR_TYPE();
#undef TG_WGMMA_AS
}

// The 256-column accumulators: rows 0–15 of d, then rows 16–31 (d + 16 is a [4] array's address).
#define TG_WGMMA_ACCUMULATORS_256(d) TG_WGMMA_ACCUMULATORS(d), TG_WGMMA_ACCUMULATORS((d + 16))
#define TG_WGMMA_ACCUMULATOR_REGS_256 \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"

// d (64 x 256, one [4] per 8 columns as above) = A·B (+ d when accumulate), A 64 x 16 and
// B 16 x 256 (as N x K, K-major) both from shared memory: the widest tile one instruction
// takes, for GEMMs (silu_gate_up_gemm.cu), where operands are read once per 256 columns.
template <bool kBf16>
__device__ __forceinline__ void MmaSS256(float (&d)[32][4], uint64_t a, uint64_t b, bool accumulate) {
#define TG_WGMMA_AS(TYPE)                                                       \
  asm volatile(                                                                 \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                             \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " "          \
      TG_WGMMA_ACCUMULATOR_REGS_256                                             \
      ", %128, %129, p, 1, 1, 0, 0;\n}\n"                                       \
      : TG_WGMMA_ACCUMULATORS_256(d)                                            \
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)))
  TG_WGMMA_FOR_TYPE();
#undef TG_WGMMA_AS
}

#undef TG_WGMMA_FOR_TYPE
#undef TG_WGMMA_ACCUMULATORS_256
#undef TG_WGMMA_ACCUMULATOR_REGS_256
#undef TG_WGMMA_ACCUMULATORS
#undef TG_WGMMA_ACCUMULATOR_REGS
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace wgmma
}  // namespace cuda
}  // namespace tg
