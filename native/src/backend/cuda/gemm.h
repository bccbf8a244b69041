// Dense GEMMs of the CUDA backend: out[m, n] = x[m, k] · w[n, k]ᵀ with W stored [N, K]
// as Hugging Face Linear layers are, f32 accumulation; or residual[m, n] += x · wᵀ into an
// f32 residual stream (RunAddTo), so that a projection joins it unrounded. Two engines:
// - cuBLASLt, for every shape. Its algorithm is chosen once per (m bucket, n, k, types), the
//   buckets of row_bucket.h: the first GEMM of a bucket times cuBLASLt's top 8 heuristic
//   candidates (TEXT_GEN_GEMM_TUNE_CANDIDATES) on its own operands and keeps the fastest (so
//   the first step of each bucket is slower; warm-up absorbs it). Descriptors are cached per
//   exact shape.
// - the GEMV kernel (gemv.h) for decode batches of m ≤ 16 rows, which streams W at close
//   to memory bandwidth. Per exact (m, n, k, types) the first call times it against
//   cuBLASLt and keeps the faster, or for a product the GEMV can fuse with what follows
//   (all but the f32 logits) the GEMV unless cuBLASLt is more than 25% faster
//   (TEXT_GEN_GEMV_SLACK=1.25; TEXT_GEN_GEMV_LOG=1 prints each decision): the fusions
//   (RoPE and the KV write, SiLU-mul, linked norms) save more than that, and the two
//   products' times are often within the timing's noise, so ranks of one step could
//   otherwise choose differently. TEXT_GEN_GEMV=0 turns it off, =1 uses it wherever it
//   applies (for A/B runs).
// CUDA graphs: while `stream` captures, no Run* allocates, synchronises or times anything.
// An undecided m ≤ 16 shape then takes the GEMV kernel, and an untuned bucket cuBLASLt's
// first heuristic algorithm (for that launch only: the next uncaptured call tunes it).
// Prepare() settles a shape before capture.
// Adding forms: every decision above is kept apart from the storing form's (its own key), and
// each timing launch of one writes a scratch [m, n] (allocated for the timing, then freed), never
// the residual, which the one real launch then adds to exactly once. Without memory for the
// scratch a shape is left undecided and launches untimed, as under a capture.
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
#include "backend/cuda/gemv.h"

namespace tg {
namespace cuda {

class Gemm {
 public:
  // Loads cuBLASLt (throws with a message when it is missing) and reads TEXT_GEN_GEMV.
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // x and w in `in` (bf16 or fp16), out in `out` (`in` or f32); all row-major, contiguous.
  // With a scaling `norm` (gemv.h's GemvNorm: x is h ⊙ weight of a norm the product before fed)
  // only where TakesGemv: it throws std::logic_error otherwise, as the other Run*s do.
  void Run(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k, ElemType in,
           ElemType out_type, const GemvNorm* norm = nullptr);

  // Whether Run (or RunAddTo, for add_to) takes the GEMV kernel for this shape, so that its
  // forms that link a norm (GemvNorm) apply. An undecided shape is decided now on these operands,
  // as its first Run would decide it (out is written, or for add_to a scratch), so that a step
  // links the same way whether or not an earlier step met the shape; under a capture it answers false.
  bool TakesGemv(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
                 ElemType in, ElemType out_type, bool add_to);

  // The MLP's down projection from its gate/up projection `gate_up` ([m, 2k], gate then up
  // in each row): out = (SiLU(gate) · up) · wᵀ. Where Run would take the GEMV kernel for
  // (m, n, k), SiLU-mul may be folded into its loads (if that timed faster for this shape, once);
  // otherwise it is written to `act` ([m, k]) first. Either way the result is the same bits.
  void RunSiluDown(cudaStream_t stream, const void* gate_up, void* act, const void* w, void* out, int64_t m, int64_t n,
                   int64_t k, ElemType in, ElemType out_type);

  // residual[m, n] += x · wᵀ (each product added once), x and w in `in`; residual f32. With a
  // feeding `norm`, also the next norm's input (GemvNorm), only where TakesGemv; with an exchanging
  // one, the ranks' products summed (GemvExchange), always by the GEMV kernel.
  void RunAddTo(cudaStream_t stream, const void* x, const void* w, float* residual, int64_t m, int64_t n, int64_t k,
                ElemType in, const GemvNorm* norm = nullptr);

  // act[m, inter] = SiLU(x · gateᵀ) · (x · upᵀ) for the MLP's gate/up weight w ([2·inter, k],
  // gate rows then up rows) in one GEMV launch (GemvOutput::kSiluOfHalves), where Run has
  // settled on the GEMV kernel for the gate/up product (m, 2·inter, k): the bits of Run then
  // LaunchSiluMul, with no [m, 2·inter] buffer, and the down projection after it a plain GEMM.
  // Otherwise launches nothing and returns false (the caller runs those two). `norm` scales it, as Run's.
  bool RunGateUpSilu(cudaStream_t stream, const void* x, const void* w, void* act, int64_t m, int64_t inter, int64_t k,
                     ElemType in, const GemvNorm* norm = nullptr);

  // The attention's qkv projection of x ([m, k]) by w ([n, k]) with RoPE and the KV-cache write
  // in the GEMV's epilogue (GemvOutput::kRopeKvWrite), where Run has settled on the GEMV kernel
  // for (m, n, k): q rotated into rope.q_out, k and v into their slots, the bits of Run then
  // LaunchRopeKvWrite, with no [m, n] buffer and no kernel after. Otherwise launches nothing
  // and returns false (the caller runs those two). `norm` scales it, as Run's.
  bool RunQkvRope(cudaStream_t stream, const void* x, const void* w, const GemvRopeKv& rope, int64_t m, int64_t n,
                  int64_t k, ElemType in, const GemvNorm* norm = nullptr);

  // RunSiluDown's product added to the f32 residual: residual += (SiLU(gate) · up) · wᵀ.
  void RunSiluDownAddTo(cudaStream_t stream, const void* gate_up, void* act, const void* w, float* residual, int64_t m,
                        int64_t n, int64_t k, ElemType in);

  // Settles how Run computes this shape, ahead of a CUDA graph capture: tunes cuBLASLt's
  // algorithm for its m bucket and, for m ≤ 16, times the GEMV kernel against cuBLASLt with W
  // read from memory rather than L2 (over extra scratch copies of W when W fits in L2).
  // `w` is the real weight if given (then nothing weight-sized is allocated unless W fits
  // in L2), else a scratch one is allocated; x and out are always scratch. Synchronises
  // `stream`; throws if it is capturing. Returns whether Run will use the GEMV kernel for
  // this shape (given 16-byte aligned operands).
  bool Prepare(cudaStream_t stream, int64_t m, int64_t n, int64_t k, ElemType in, ElemType out_type,
               const void* w = nullptr);
  // The same for RunAddTo's shape (a scratch residual; the real one is never touched).
  bool PrepareAddTo(cudaStream_t stream, int64_t m, int64_t n, int64_t k, ElemType in, const void* w = nullptr);

 private:
  enum class GemvMode { kAuto, kOff, kOn };
  struct Plan;
  // One GEMM's shape and types, and whether it adds to out (then out is f32) or stores.
  struct Key {
    int64_t m, n, k;
    ElemType in, out;
    bool add_to;
    bool operator<(const Key& o) const {
      return std::tie(m, n, k, in, out, add_to) < std::tie(o.m, o.n, o.k, o.in, o.out, o.add_to);
    }
    GemvOutput gemv_output() const { return add_to ? GemvOutput::kAddTo : GemvOutput::kStore; }
  };
  // The bodies of Run and RunAddTo, RunSiluDown and RunSiluDownAddTo, Prepare and PrepareAddTo.
  void RunKey(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out);
  void RunSiluDownKey(cudaStream_t stream, const Key& key, const void* gate_up, void* act, const void* w, void* out);
  bool PrepareKey(cudaStream_t stream, const Key& key, const void* w);
  Plan& PlanFor(const Key& key);
  std::vector<lt::MatmulAlgo> Candidates(const Plan& p, int count);
  // The fastest of cuBLASLt's top heuristic candidates for `key`'s shape, which then serves every
  // row count up to `bucket_rows` (TEXT_GEN_GEMV_LOG=1 prints each tuning).
  lt::MatmulAlgo Tune(const Plan& p, const Key& key, int64_t bucket_rows, cudaStream_t stream, const void* x,
                      const void* w, void* out);
  lt::Status Launch(const Plan& p, const lt::MatmulAlgo& algo, cudaStream_t stream, const void* x, const void* w,
                    void* out);
  void RunLt(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out);
  void LaunchGemvFor(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out,
                     GemvInput input = GemvInput::kPlain);
  // Run's or RunAddTo's product with a linked norm: the GEMV kernel where settled (always for an
  // exchange between ranks, which every rank must run), else a logic error.
  void RunLinked(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out, const GemvNorm& norm);
  // Whether Run has settled on the GEMV kernel for `key` (TEXT_GEN_GEMV=1, or timed faster);
  // false while undecided. The fused forms (RunGateUpSilu, RunQkvRope) follow that decision.
  bool GemvSettled(const Key& key) const;
  // Whether Run takes the GEMV kernel for `key` with these operands (deciding it now if undecided).
  bool UseGemv(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out);
  // Times the GEMV kernel against cuBLASLt, W taken in turn from `ws`, and records the faster.
  // Returns true, recording nothing, when an adding key has no memory for its timing scratch.
  bool DecideGemv(cudaStream_t stream, const Key& key, const void* x, const std::vector<const void*>& ws, void* out);

  const lt::Api& api_;
  lt::Handle handle_ = nullptr;
  DeviceBuffer workspace_;
  GemvMode gemv_mode_ = GemvMode::kAuto;
  float gemv_slack_ = 1.25f;    // DecideGemv's allowance for a fusable product (TEXT_GEN_GEMV_SLACK)
  bool log_decisions_ = false;  // TEXT_GEN_GEMV_LOG=1
  bool pow2_buckets_ = false;   // TEXT_GEN_GEMM_POW2_BUCKETS=1: tune per power of two of m (A/B)
  int tune_candidates_ = 8;     // TEXT_GEN_GEMM_TUNE_CANDIDATES: heuristic results Tune times
  int64_t l2_bytes_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;        // exact shapes
  std::map<Key, lt::MatmulAlgo> algos_;               // by m bucket (TimingRowBucket)
  std::map<Key, bool> use_gemv_;                      // exact shapes, m ≤ 16: GEMV kernel (true) or cuBLASLt
  std::map<Key, bool> fuse_silu_;                     // RunSiluDown's shapes: SiLU in the GEMV (true) or apart
};

}  // namespace cuda
}  // namespace tg
