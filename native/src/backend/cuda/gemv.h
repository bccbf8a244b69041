// The GEMV kernel for decode batches: out[m, n] = (or +=) x[m, k] · w[n, k]ᵀ for m ≤ 16 rows,
// W stored [N, K] like Hugging Face Linear layers, f32 accumulation. A decode step
// reads every weight once and does almost no arithmetic per byte, so this kernel is
// built to stream W at memory bandwidth; Gemm (gemm.h) picks it or cuBLASLt per shape.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device_buffer.h"
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
// kRopeKvWrite: w is the attention's qkv projection and the product goes where
// rope_kv_write.cu would put it (GemvRopeKv): q rotated into q_out, k rotated and v into
// their cache slots, bit for bit, with no [m, n] buffer and no kernel after. A CTA takes 8
// dims of a q or k head and the 8 dims half a head further, the pairs RoPE rotates
// together, or 16 dims of a v head.
enum class GemvOutput { kStore, kAddTo, kSiluOfHalves, kRopeKvWrite };

// kRopeKvWrite's arguments, those of LaunchRopeKvWrite (kernels.h) for one table of
// frequencies; n is (q_heads + 2 kv_heads) · head_dim, head_dim a multiple of 16.
struct GemvRopeKv {
  const float* bias = nullptr;  // [n] f32, added to the product before the rotation (optional)
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;  // [head_dim / 2]
  const int32_t* slot_block = nullptr;
  const int32_t* slot_offset = nullptr;
  int q_heads = 0, kv_heads = 0, head_dim = 0;
  void* q_out = nullptr;  // [m, q_heads · head_dim]
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  int64_t block_size = 0;
};

// Tensor parallelism: the adding GEMV's product is this rank's share of a row-parallel layer's
// output (o's, down's: each rank holds a slice of k), and the same CTA of every rank trades its
// products with its twins over peer memory before the add (the all-reduce, with no kernel of its
// own): each writes its outputs into every peer's mailbox, 4 bytes of product beside the call's
// number in one 8-byte store (so a reader that sees the number sees the product), polls its own
// mailbox for the peers', and adds the rank-order f32 sum, so every rank gets the same bits.
// A CTA waits for its twins, so every CTA of the grid must be resident at once on every rank: where
// the 16-output tiles are more than the kernel's occupancy holds (the 70B's 512), each CTA takes
// several tiles in turn, sending up to four tiles' products before it waits for the first's twins.
// Every rank must launch the same exchanging GEMVs in the same order with the same n (each tile
// counts its calls).
constexpr int kGemvExchangeMaxRanks = 8;
struct GemvExchange {
  int rank = 0;
  int world_size = 1;  // 1: no exchange
  char* mailboxes[kGemvExchangeMaxRanks] = {};  // every rank's GemvExchangeBuffers::mailboxes, as this process maps it
  uint32_t* counters = nullptr;  // this rank's calls per tile: max_ctas, device memory zeroed once
  int max_ctas = 0;              // the tiles (of 16 outputs) the mailboxes and counters hold
};

// One rank's mailboxes and call counters for a group of world_size ranks, zeroed on the current
// device (before any peer writes into them). The mailboxes are one allocation, as CUDA IPC exports.
struct GemvExchangeBuffers {
  GemvExchangeBuffers(int world_size, int max_ctas);
  // This rank's view, with its own mailboxes in place; the caller adds the peers'.
  GemvExchange View(int rank) const;
  int world_size, max_ctas;
  DeviceBuffer mailboxes, counters;
};

// A residual add linked to the RMSNorm after it, so that no norm kernel runs between two
// decode GEMVs. The adding GEMV (kAddTo of a plain input) feeds it: besides residual += x·wᵀ
// it writes scaled = h ⊙ weight (h the row of the residual after the add, rounded to `in`) and,
// per x row, each CTA's sum of h² over its 16 outputs into sum_squares[row · parts + cta]. The
// GEMV that takes `scaled` as its x (kStore, kSiluOfHalves or kRopeKvWrite) sums those parts
// (k = hidden, parts = ceil(k / 16)) and scales each product by RMSNorm's factor
// rsqrt(Σ h² / k + eps) before its epilogue. Since (h ⊙ w)·W scaled by the factor is the norm's
// output times W, only the rounding differs from the norm kernel then the GEMV: h ⊙ w is
// rounded to `in` where the norm rounds h ⊙ w · factor. bf16's range holds any h ⊙ w; fp16's
// (65504) need not, so the model links norms in bf16 only.
// An adding GEMV may also only exchange (GemvExchange) without feeding a norm: then the norm
// kernel reads the residual it left.
struct GemvNorm {
  float* sum_squares = nullptr;  // [m, parts] f32: written by the feeding GEMV, read by the scaled one
  const float* weight = nullptr;  // feeding: the norm's weight [n] f32
  void* scaled = nullptr;         // feeding: [m, n] in `in`, the next GEMV's x
  float eps = 0.0f;               // scaled: the norm's epsilon
  GemvExchange exchange;          // adding: the product's twins on the other ranks, if any
  bool feeds() const { return sum_squares && weight && scaled; }
  bool feeds_nothing() const { return !sum_squares && !weight && !scaled; }
  bool scales() const { return sum_squares != nullptr; }
  bool exchanges() const { return exchange.world_size > 1; }
};

// True when LaunchGemv computes this product: 1 ≤ m ≤ kGemvMaxRows, k a multiple of 8,
// x and w 16-byte aligned (so every row of both is), `in` bf16 or fp16, and `out`
// - kStore of kPlain input: `in` or f32;
// - kStore of kSiluOfGateUp input: `in` (not built for f32: the storing down projection writes `in`);
// - kAddTo: f32;
// - kSiluOfHalves of kPlain input: `in`, with n (the output's width, half of w's rows) a multiple of 8;
// - kRopeKvWrite of kPlain input: `in` (its q_out and cache), with n as GemvRopeKv says;
// and with a GemvNorm: for kAddTo of kPlain input one that feeds (every pointer) or exchanges
// (no feeding pointer) or both (an exchange's n / 16 tiles within its max_ctas), a scaling one
// for the kPlain input of kStore in `in`, kSiluOfHalves or kRopeKvWrite.
bool GemvSupports(const void* x, const void* w, int64_t m, int64_t n, int64_t k, ElemType in, ElemType out,
                  GemvInput input = GemvInput::kPlain, GemvOutput output = GemvOutput::kStore,
                  const GemvRopeKv& rope = {}, const GemvNorm* norm = nullptr);

// out (row-major [m, n], in `out_type`) = x ([m, k], `in`) · w ([n, k], `in`)ᵀ, or += for kAddTo
// (for kSiluOfHalves w is [2n, k] and out the SiLU-mul of its halves' products, [m, n]),
// feeding or scaled by `norm` when given (GemvNorm). Throws std::invalid_argument when !GemvSupports.
// Allocates nothing and never synchronises, so it may run while `stream` captures a CUDA graph.
void LaunchGemv(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
                ElemType in, ElemType out_type, GemvInput input = GemvInput::kPlain,
                GemvOutput output = GemvOutput::kStore, const GemvRopeKv& rope = {},
                const GemvNorm* norm = nullptr);

}  // namespace cuda
}  // namespace tg
