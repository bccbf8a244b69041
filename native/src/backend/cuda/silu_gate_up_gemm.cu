// See silu_gate_up_gemm.h. A persistent, warp-specialised Hopper GEMM:
// - Each output tile is 128 rows of x by 128 columns of act, which needs 256 rows of w: the
//   tile's 128 gate rows and its 128 up rows, loaded one after the other so that one
//   wgmma.m64n256k16 per 16 of k multiplies both, and a thread ends up holding gate and up
//   of the same (row, column) in its accumulators: SiLU-mul is a register operation.
// - CTAs work in clusters of two on two row blocks of one column block: each brings its own
//   x box and half of the shared w tile (gate's rows, or up's) and multicasts that half into
//   both CTAs' shared memory, so w crosses the L2 once per pair: a third less L2 traffic,
//   which under the H100's power cap (an 8k prefill runs at ~1.3–1.7 GHz) is energy.
// - A producer thread per CTA streams k in steps of 64 (a 128-byte swizzle row) through four
//   stages; each stage has a full barrier (the bytes of all three boxes) and an empty one
//   (the consumer warps of both CTAs, since either CTA's copies write into both). It runs
//   ahead across tile boundaries, so the next tile's first stages are in while the
//   consumers still write the last one's output.
// - Two consumer warpgroups take 64 rows each. They keep one k-step's products in flight,
//   releasing a stage as soon as the products that read it have completed.
// - The clusters walk the tile pairs in groups of kGroupM row blocks (all of a group's row
//   blocks for one column block, then the next column block), so the tiles in flight at
//   once read ~16 MB of x and ~16 MB of w, which the L2 holds, instead of all of w.
#include "backend/cuda/silu_gate_up_gemm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/per_device.h"
#include "backend/cuda/prefill_attention_wgmma.h"
#include "backend/cuda/tensor_map.h"
#include "backend/cuda/tma.cuh"
#include "backend/cuda/wgmma.cuh"

namespace tg {
namespace cuda {
namespace {

using mma::Pack2;
using mma::SmemAddr;

constexpr int kBlockM = 128;  // rows of x per tile: two warpgroups of 64
constexpr int kBlockN = 128;  // columns of act per tile: 256 rows of w
constexpr int kBlockK = 64;   // one 128-byte swizzle row of 16-bit elements
constexpr int kStages = 4;
constexpr int kGroupM = 16;  // row blocks per group of the tile order (a multiple of kCluster)
constexpr int kConsumerThreads = 256;
constexpr int kThreads = kConsumerThreads + 128;  // the producer's warpgroup: registers come per warpgroup
constexpr int kProducerWarp = kConsumerThreads / 32;
constexpr int kConsumerRegisters = 232;  // 128 accumulators and the epilogue's
constexpr int kProducerRegisters = 40;
static_assert(2 * 128 * kConsumerRegisters + 128 * kProducerRegisters <= 65536, "register file");
constexpr uint32_t kABytes = kBlockM * kBlockK * 2;
constexpr uint32_t kHalfBBytes = kBlockN * kBlockK * 2;  // gate's (or up's) rows of a stage
constexpr uint32_t kStageBytes = kABytes + 2 * kHalfBBytes;
// Swizzle atoms need their alignment, which the dynamic shared memory's start may lack.
constexpr size_t kSmemBytes = wgmma::kAtomBytes + kStages * kStageBytes + 2 * kStages * 8;

constexpr int kCluster = 2;  // CTAs sharing each column block's w tile
// Stage fills that a consumer warp of either CTA releases: all of them.
constexpr int kEmptyArrivals = kCluster * kConsumerThreads / 32;

// The tile of the CTA of cluster rank `rank` in tile pair `pair`. Pairs (a cluster's two row
// blocks of one column block) go row pairs fastest inside a group of kGroupM row blocks,
// then column blocks.
__device__ __forceinline__ void TileOfPair(int pair, uint32_t rank, int row_pairs, int col_blocks, int* row_block,
                                           int* col_block) {
  constexpr int kGroupPairs = kGroupM / kCluster;
  const int per_group = kGroupPairs * col_blocks;
  const int first = pair / per_group * kGroupPairs;
  const int pairs_here = min(row_pairs - first, kGroupPairs);
  const int in_group = pair % per_group;
  *row_block = (first + in_group % pairs_here) * kCluster + static_cast<int>(rank);
  *col_block = in_group / pairs_here;
}

// Two values rounded to T, as the GEMM's 16-bit output would have held them, back in f32.
template <typename T>
__device__ __forceinline__ float2 RoundPair(float lo, float hi) {
  const uint32_t packed = Pack2<T>(lo, hi);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&packed));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(&packed));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    SiluGateUpGemmKernel(const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap w_map,
                         T* __restrict__ act, int m, int n, int k) {
#if !defined(TG_WGMMA_BUILT) || !defined(TG_TMA_BUILT)
  __trap();  // launched only where PrefillWgmmaAvailable(): an sm_90a build on compute capability 9.0
#else
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  extern __shared__ unsigned char smem_raw[];
  // The same offsets in both CTAs of the cluster (the dynamic shared memory starts at the
  // same address in each), which the multicast copies and the remote arrivals rely on.
  const uint32_t base = wgmma::AtomAligned(SmemAddr(smem_raw));
  auto a_stage = [&](int s) { return base + s * kStageBytes; };
  auto b_stage = [&](int s) { return base + s * kStageBytes + kABytes; };
  const uint32_t bars = base + kStages * kStageBytes;
  auto full = [&](int s) { return bars + 8 * s; };
  auto empty = [&](int s) { return bars + 8 * (kStages + s); };

  const int row_blocks = (m + kBlockM - 1) / kBlockM, col_blocks = n / kBlockN, k_steps = k / kBlockK;
  const int row_pairs = (row_blocks + kCluster - 1) / kCluster;
  const int pairs = row_pairs * col_blocks;
  const int cluster = blockIdx.x / kCluster, clusters = gridDim.x / kCluster;
  const uint32_t rank = tma::ClusterCtaRank();
  const int tid = threadIdx.x;
  // Warp-uniform in the compiler's eyes too: ptxas serialises wgmma's under a branch it
  // cannot prove uniform (C7520).
  const int warp_id = __shfl_sync(0xffffffffu, tid / 32, 0);
  if (tid == 0) {
    // Full: the producer's one arrival and the bytes. Empty: every consumer warp of the cluster.
    for (int s = 0; s < kStages; ++s) {
      tma::BarrierInit(full(s), 1);
      tma::BarrierInit(empty(s), kEmptyArrivals);
    }
    tma::FenceBarrierInit();
  }
  tma::ClusterSync();  // the peer's barriers are initialised before anything reaches them

  if (warp_id >= kProducerWarp) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegisters));
    if (tid == kConsumerThreads) {
      // Fill f of stage s waits for phase f - 1 of its empty barrier (the first for nothing:
      // parity 1 of a fresh barrier counts as complete). Rows of x past m (a whole box for
      // the second CTA of a last, odd row block) arrive as zeros and still count their bytes.
      int fill = 0;
      for (int pair = cluster; pair < pairs; pair += clusters) {
        int row_block, col_block;
        TileOfPair(pair, rank, row_pairs, col_blocks, &row_block, &col_block);
        for (int ks = 0; ks < k_steps; ++ks, ++fill) {
          const int s = fill % kStages;
          tma::Wait(empty(s), ((fill / kStages) & 1) ^ 1);
          tma::ArriveExpectBytes(full(s), kStageBytes);
          tma::Load2d(a_stage(s), &x_map, ks * kBlockK, row_block * kBlockM, full(s));
          // Rank 0 brings gate's rows, rank 1 up's, each into both CTAs.
          tma::Load2dMulticast(b_stage(s) + rank * kHalfBBytes, &w_map, ks * kBlockK,
                               static_cast<int>(rank) * n + col_block * kBlockN, full(s), (1u << kCluster) - 1);
        }
      }
    }
    __syncwarp();
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegisters));
    const int warpgroup = warp_id / 4, warp = warp_id % 4, lane = tid % 32;
    const int g = lane / 4, t4 = lane % 4;
    // K-major operands, 8-row groups 1,024 bytes apart, k-steps of 16 elements 32 bytes apart
    // inside the 128-byte rows. B's 256 rows are gate's 128, then up's.
    using wgmma::kAtomBytes;
    auto a_desc = [&](int s, int kk) {
      return wgmma::Descriptor(a_stage(s) + warpgroup * 64 * 128 + kk * 32, 16, kAtomBytes);
    };
    auto b_desc = [&](int s, int kk) { return wgmma::Descriptor(b_stage(s) + kk * 32, 16, kAtomBytes); };
    // A stage is free once this warp's products that read it are done, in both CTAs' copies.
    auto release = [&](int s) {
      if (lane < kCluster) tma::ArriveCluster(empty(s), lane);
    };

    // acc[j]: columns 8j + 2t4 (+1) of rows g and g + 8 of this warp's 16; j < 16 are gate's
    // columns, j + 16 up's of the same act column.
    float acc[32][4];
    int fill = 0;
    for (int pair = cluster; pair < pairs; pair += clusters) {
      int row_block, col_block;
      TileOfPair(pair, rank, row_pairs, col_blocks, &row_block, &col_block);
      for (int ks = 0; ks < k_steps; ++ks, ++fill) {
        const int s = fill % kStages;
        tma::Wait(full(s), (fill / kStages) & 1);
        wgmma::Fence();
#pragma unroll
        for (int kk = 0; kk < kBlockK / 16; ++kk) {
          wgmma::MmaSS256<kBf16>(acc, a_desc(s, kk), b_desc(s, kk), ks + kk > 0);
        }
        wgmma::Commit();
        // The previous step's products have completed: its stage may be refilled.
        wgmma::Wait<1>();
        if (ks > 0) release((fill - 1) % kStages);
      }
      wgmma::Wait<0>();
      release((fill - 1) % kStages);
      wgmma::Touch(acc);

      // Gate and up rounded to T, as the GEMM's output buffer held them, then SiLU-mul as
      // silu_mul.cu computes it; two adjacent columns per 4-byte store.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = row_block * kBlockM + warpgroup * 64 + warp * 16 + g + 8 * h;
        if (row < m) {
          uint32_t* dst =
              reinterpret_cast<uint32_t*>(act + static_cast<int64_t>(row) * n + col_block * kBlockN + 2 * t4);
#pragma unroll
          for (int j = 0; j < 16; ++j) {
            const float2 gate = RoundPair<T>(acc[j][2 * h], acc[j][2 * h + 1]);
            const float2 up = RoundPair<T>(acc[j + 16][2 * h], acc[j + 16][2 * h + 1]);
            dst[4 * j] = Pack2<T>(SiluMul(gate.x, up.x), SiluMul(gate.y, up.y));
          }
        }
      }
    }
  }
  // Neither CTA leaves while the other may still arrive on its barriers.
  tma::ClusterSync();
#endif
}

template <typename T>
void Launch(cudaStream_t stream, const void* x, const void* w, void* act, int64_t m, int64_t n, int64_t k) {
  const CUtensorMap x_map = MakeSwizzled128RowsMap(x, static_cast<uint64_t>(m), static_cast<uint64_t>(k), kBlockM);
  const CUtensorMap w_map =
      MakeSwizzled128RowsMap(w, static_cast<uint64_t>(2 * n), static_cast<uint64_t>(k), kBlockN);
  auto kernel = SiluGateUpGemmKernel<T>;
  TG_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes)));
  // Clusters of kCluster CTAs, as many as can run at once (a GPC with an odd number of free
  // SMs leaves one idle): the loop over tile pairs must never wait for a second wave.
  cudaLaunchAttribute cluster_dims;
  cluster_dims.id = cudaLaunchAttributeClusterDimension;
  cluster_dims.val.clusterDim.x = kCluster;
  cluster_dims.val.clusterDim.y = 1;
  cluster_dims.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = kSmemBytes;
  config.stream = stream;
  config.attrs = &cluster_dims;
  config.numAttrs = 1;
  static PerDeviceCount resident_clusters;
  const int clusters = resident_clusters.Get([&](int device) {
    int sms = 0;
    TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cudaLaunchConfig_t probe = config;
    probe.gridDim = dim3(static_cast<unsigned>(sms / kCluster * kCluster));
    int count = 0;
    TG_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&count, kernel, &probe));
    return std::max(1, count);
  });
  const int64_t pairs = ((m + kBlockM - 1) / kBlockM + kCluster - 1) / kCluster * (n / kBlockN);
  config.gridDim = dim3(static_cast<unsigned>(kCluster * std::min<int64_t>(pairs, clusters)));
  TG_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, x_map, w_map, static_cast<T*>(act), static_cast<int>(m),
                                   static_cast<int>(n), static_cast<int>(k)));
}

}  // namespace

bool SiluGateUpGemmTakes(const void* x, const void* w, int64_t m, int64_t n, int64_t k, ElemType type) {
  const bool half = type == ElemType::kBF16 || type == ElemType::kF16;
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  const bool fits = m >= 1 && m < (int64_t{1} << 31) / std::max<int64_t>(n, 1) && n >= kBlockN && n % kBlockN == 0 &&
                    k >= kBlockK && k % kBlockK == 0 && k < (int64_t{1} << 31);
  return half && aligned && fits && PrefillWgmmaAvailable();
}

void LaunchSiluGateUpGemm(cudaStream_t stream, ElemType type, const void* x, const void* w, void* act, int64_t m,
                          int64_t n, int64_t k) {
  if (!SiluGateUpGemmTakes(x, w, m, n, k, type)) {
    throw std::invalid_argument("silu_gate_up_gemm: needs sm_90a code on an sm_90 GPU, bf16/fp16, k a multiple of " +
                                std::to_string(kBlockK) + ", n of " + std::to_string(kBlockN) +
                                " and 16-byte aligned operands (got m " + std::to_string(m) + ", n " +
                                std::to_string(n) + ", k " + std::to_string(k) + ")");
  }
  TG_DISPATCH_HALF(type, Launch, stream, x, w, act, m, n, k);
  TG_CUDA_CHECK_LAUNCH("silu_gate_up_gemm");
}

}  // namespace cuda
}  // namespace tg
