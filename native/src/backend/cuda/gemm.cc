// See gemm.h. Row-major out[m, n] = x[m, k] · w[n, k]ᵀ is, in cuBLASLt's
// column-major terms, outᵀ (n × m, ld n) = op_T(W as k × n, ld k) · (xᵀ as k × m, ld k):
// the "TN" GEMM with M = n, N = m, K = k.
#include "backend/cuda/gemm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/row_bucket.h"
#include "backend/cuda/stopwatch.h"
#include "backend/cuda/stream_capture.h"

namespace tg {
namespace cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's recommendation for Hopper
constexpr int kTuneCandidates = 8;              // heuristic results timed per bucket (default)
constexpr int kDecideReps = 10;                 // launches per timing of GEMV vs cuBLASLt
constexpr size_t kMaxScratchWeights = 16;       // Prepare's copies of a W that fits in L2

cudaDataType_t DataType(ElemType t) {
  switch (t) {
    case ElemType::kF32: return CUDA_R_32F;
    case ElemType::kBF16: return CUDA_R_16BF;
    case ElemType::kF16: return CUDA_R_16F;
  }
  return CUDA_R_32F;
}

// The bucket whose tuned algorithm a GEMM of m rows takes: TimingRowBucket's, or with
// TEXT_GEN_GEMM_POW2_BUCKETS=1 the powers of two this backend used before (an A/B switch).
int64_t AlgoBucket(int64_t m, bool pow2) {
  if (!pow2) return TimingRowBucket(m);
  int64_t b = 1;
  while (b < m && b < 8192) b <<= 1;
  return b < m ? ((m + 8191) / 8192) * 8192 : b;
}

// Whether the work `a` enqueues runs no slower than `b`'s (BestTimes).
template <typename A, typename B>
bool FirstIsFaster(cudaStream_t stream, A&& a, B&& b) {
  const auto [a_ms, b_ms] = BestTimes(stream, a, b);
  return a_ms <= b_ms;
}

// Where the timing launches of a decision write: the caller's `out` when the GEMM stores
// (the real launch overwrites it afterwards), else a zeroed f32 scratch of out's size, since
// each timing launch of an adding GEMM would add its product into the residual once more.
// get() is null when there is no memory for the scratch: the caller launches untimed then.
// Construct it only outside a capture; it is freed (after the timing's synchronisation) with it.
class TimingOutput {
 public:
  TimingOutput(cudaStream_t stream, bool add_to, void* out, int64_t m, int64_t n) : ptr_(out) {
    if (!add_to) return;
    ptr_ = nullptr;
    try {
      scratch_.Resize(static_cast<size_t>(m * n) * sizeof(float));
    } catch (const std::runtime_error&) {
      cudaGetLastError();  // the failed cudaMalloc's error, so that later launch checks don't see it
      return;
    }
    TG_CUDA_CHECK(cudaMemsetAsync(scratch_.get(), 0, scratch_.bytes(), stream));
    ptr_ = scratch_.get();
  }
  void* get() const { return ptr_; }

 private:
  DeviceBuffer scratch_;
  void* ptr_;
};

}  // namespace

struct Gemm::Plan {
  const lt::Api* api = nullptr;
  lt::MatmulDesc desc = nullptr;
  lt::MatrixLayout a = nullptr, b = nullptr, c = nullptr;
  float beta = 0.0f;  // 1 for an adding GEMM: D = A·B + C, with C = D
  lt::MatmulAlgo algo{};
  bool has_algo = false;
  ~Plan() {
    if (a) api->MatrixLayoutDestroy(a);
    if (b) api->MatrixLayoutDestroy(b);
    if (c) api->MatrixLayoutDestroy(c);
    if (desc) api->MatmulDescDestroy(desc);
  }
};

Gemm::Gemm() : api_(lt::LoadApi()) {
  lt::Check(api_.Create(&handle_), "create");
  workspace_.Resize(kWorkspaceBytes);
  const char* mode = std::getenv("TEXT_GEN_GEMV");
  if (mode != nullptr && std::strcmp(mode, "0") == 0) gemv_mode_ = GemvMode::kOff;
  if (mode != nullptr && std::strcmp(mode, "1") == 0) gemv_mode_ = GemvMode::kOn;
  if (const char* slack = std::getenv("TEXT_GEN_GEMV_SLACK")) gemv_slack_ = std::max(0.0f, std::strtof(slack, nullptr));
  log_decisions_ = SetToOne("TEXT_GEN_GEMV_LOG");
  pow2_buckets_ = SetToOne("TEXT_GEN_GEMM_POW2_BUCKETS");
  tune_candidates_ = PositiveFromEnv("TEXT_GEN_GEMM_TUNE_CANDIDATES", kTuneCandidates, 64);
  int device = 0, l2 = 0;
  TG_CUDA_CHECK(cudaGetDevice(&device));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  l2_bytes_ = l2;
}

Gemm::~Gemm() {
  plans_.clear();
  if (handle_) api_.Destroy(handle_);
}

Gemm::Plan& Gemm::PlanFor(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  p->api = &api_;
  p->beta = key.add_to ? 1.0f : 0.0f;
  lt::Check(api_.MatmulDescCreate(&p->desc, lt::kCompute32F, CUDA_R_32F), "matmul desc create");
  lt::Operation ta = lt::kOpT, tb = lt::kOpN;
  lt::Check(api_.MatmulDescSetAttribute(p->desc, lt::kMatmulDescTransA, &ta, sizeof ta), "set transa");
  lt::Check(api_.MatmulDescSetAttribute(p->desc, lt::kMatmulDescTransB, &tb, sizeof tb), "set transb");
  lt::Check(api_.MatrixLayoutCreate(&p->a, DataType(key.in), key.k, key.n, key.k), "layout A");
  lt::Check(api_.MatrixLayoutCreate(&p->b, DataType(key.in), key.k, key.m, key.k), "layout B");
  lt::Check(api_.MatrixLayoutCreate(&p->c, DataType(key.out), key.n, key.m, key.n), "layout C");
  return *plans_.emplace(key, std::move(p)).first->second;
}

std::vector<lt::MatmulAlgo> Gemm::Candidates(const Plan& p, int count) {
  lt::MatmulPreference pref = nullptr;
  lt::Check(api_.MatmulPreferenceCreate(&pref), "preference create");
  uint64_t ws = kWorkspaceBytes;
  lt::Status s = api_.MatmulPreferenceSetAttribute(pref, lt::kMatmulPrefMaxWorkspaceBytes, &ws, sizeof ws);
  std::vector<lt::MatmulHeuristicResult> results(static_cast<size_t>(count));
  int found = 0;
  if (s == lt::kStatusSuccess) {
    s = api_.MatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, count, results.data(), &found);
  }
  api_.MatmulPreferenceDestroy(pref);
  lt::Check(s, "algorithm heuristic");
  std::vector<lt::MatmulAlgo> algos;
  for (int i = 0; i < found; ++i) {
    if (results[static_cast<size_t>(i)].state == lt::kStatusSuccess) algos.push_back(results[static_cast<size_t>(i)].algo);
  }
  if (algos.empty()) throw std::runtime_error("cuBLASLt has no algorithm for this GEMM shape");
  return algos;
}

lt::Status Gemm::Launch(const Plan& p, const lt::MatmulAlgo& algo, cudaStream_t stream, const void* x, const void* w,
                        void* out) {
  const float alpha = 1.0f;
  return api_.Matmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &p.beta, out, p.c, out, p.c, &algo, workspace_.get(),
                     workspace_.bytes(), stream);
}

lt::MatmulAlgo Gemm::Tune(const Plan& p, const Key& key, int64_t bucket_rows, cudaStream_t stream, const void* x,
                          const void* w, void* out) {
  std::vector<lt::MatmulAlgo> candidates = Candidates(p, tune_candidates_);
  if (candidates.size() == 1) return candidates[0];
  constexpr int kReps = 3;
  Stopwatch watch;
  float best_ms = 0.0f, first_ms = -1.0f;
  size_t best = 0;
  bool any = false;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (Launch(p, candidates[i], stream, x, w, out) != lt::kStatusSuccess) continue;  // warm-up, and a validity check
    const float ms = watch.Time(stream, [&] {
      for (int r = 0; r < kReps; ++r) Launch(p, candidates[i], stream, x, w, out);
    });
    if (i == 0) first_ms = ms;
    if (!any || ms < best_ms) {
      best_ms = ms;
      best = i;
      any = true;
    }
  }
  if (log_decisions_) {
    std::fprintf(stderr,
                 "text-gen gemm: cuBLASLt tuned for rows to %lld, n %lld k %lld%s at %lld rows: candidate %zu of %zu, "
                 "%.1f us (the heuristic's first %.1f us)\n",
                 static_cast<long long>(bucket_rows), static_cast<long long>(key.n), static_cast<long long>(key.k),
                 key.add_to ? " (adding)" : "", static_cast<long long>(key.m), best + 1, candidates.size(),
                 best_ms * 1e3f / kReps, first_ms * 1e3f / kReps);
  }
  return candidates[best];
}

void Gemm::RunLt(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out) {
  Plan& p = PlanFor(key);
  if (!p.has_algo) {
    // One algorithm per (m bucket, n, k, types, add_to), timed on the first shape of the bucket that runs.
    Key bucket_key = key;
    bucket_key.m = AlgoBucket(key.m, pow2_buckets_);
    auto it = algos_.find(bucket_key);
    if (it == algos_.end()) {
      // Tuning launches every candidate and waits on events, which a capture forbids (and an
      // adding GEMM needs memory for its timing scratch): this launch takes the heuristic's
      // first algorithm, and the bucket stays untuned so that a later call tunes it.
      auto untuned = [&] { lt::Check(Launch(p, Candidates(p, 1)[0], stream, x, w, out), "matmul"); };
      if (IsCapturing(stream)) {
        untuned();
        return;
      }
      TimingOutput timing(stream, key.add_to, out, key.m, key.n);
      if (timing.get() == nullptr) {
        untuned();
        return;
      }
      it = algos_.emplace(bucket_key, Tune(p, key, bucket_key.m, stream, x, w, timing.get())).first;
    }
    p.algo = it->second;
    p.has_algo = true;
  }
  if (Launch(p, p.algo, stream, x, w, out) != lt::kStatusSuccess) {
    // The bucket's algorithm does not suit this exact m: take the heuristic's own pick for it.
    p.algo = Candidates(p, 1)[0];
    lt::Check(Launch(p, p.algo, stream, x, w, out), "matmul");
  }
}

void Gemm::LaunchGemvFor(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out,
                         GemvInput input) {
  LaunchGemv(stream, x, w, out, key.m, key.n, key.k, key.in, key.out, input, key.gemv_output());
}

bool Gemm::DecideGemv(cudaStream_t stream, const Key& key, const void* x, const std::vector<const void*>& ws,
                      void* out) {
  TimingOutput timing(stream, key.add_to, out, key.m, key.n);
  if (timing.get() == nullptr) return true;  // as under a capture: the GEMV kernel, undecided
  void* const target = timing.get();
  // Each once untimed: cuBLASLt tunes its bucket here, and both warm up.
  RunLt(stream, key, x, ws[0], target);
  LaunchGemvFor(stream, key, x, ws[0], target);
  const size_t reps = std::max<size_t>(kDecideReps, ws.size());
  size_t next = 0;
  const auto [gemv_ms, lt_ms] = BestTimes(
      stream,
      [&] {
        for (size_t r = 0; r < reps; ++r) LaunchGemvFor(stream, key, x, ws[next++ % ws.size()], target);
      },
      [&] {
        for (size_t r = 0; r < reps; ++r) RunLt(stream, key, x, ws[next++ % ws.size()], target);
      });
  // A product the GEMV can fuse with what follows it (RoPE and the KV write, SiLU-mul, a linked
  // norm: everything but an f32 store, the logits) keeps the GEMV unless cuBLASLt is faster by
  // more than the slack, since each fusion saves a kernel that the product's time leaves out.
  const bool fusable = key.add_to || key.out != ElemType::kF32;
  const bool use = gemv_ms <= lt_ms * (fusable ? gemv_slack_ : 1.0f);
  if (log_decisions_) {
    std::fprintf(stderr, "text-gen gemm: m %lld n %lld k %lld%s: GEMV %.1f us, cuBLASLt %.1f us: %s\n",
                 static_cast<long long>(key.m), static_cast<long long>(key.n), static_cast<long long>(key.k),
                 key.add_to ? " (adding)" : "", gemv_ms * 1e3f / reps, lt_ms * 1e3f / reps, use ? "GEMV" : "cuBLASLt");
  }
  use_gemv_[key] = use;
  return use;
}

bool Gemm::GemvSettled(const Key& key) const {
  if (gemv_mode_ != GemvMode::kAuto) return gemv_mode_ == GemvMode::kOn;
  auto it = use_gemv_.find(key);
  return it != use_gemv_.end() && it->second;
}

bool Gemm::UseGemv(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out) {
  if (!GemvSupports(x, w, key.m, key.n, key.k, key.in, key.out, GemvInput::kPlain, key.gemv_output())) return false;
  if (gemv_mode_ != GemvMode::kAuto || use_gemv_.count(key) > 0) return GemvSettled(key);
  // Timed on the caller's operands: a W that fits in L2 is timed from L2 (Prepare avoids that).
  // A capture of an undecided shape takes the GEMV kernel, which needs no tuning; the first
  // uncaptured call, or Prepare, decides.
  return IsCapturing(stream) ? true : DecideGemv(stream, key, x, {w}, out);
}

void Gemm::RunKey(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out) {
  if (key.m <= 0) return;
  if (UseGemv(stream, key, x, w, out)) {
    LaunchGemvFor(stream, key, x, w, out);
    return;
  }
  RunLt(stream, key, x, w, out);
}

void Gemm::RunLinked(cudaStream_t stream, const Key& key, const void* x, const void* w, void* out,
                     const GemvNorm& norm) {
  if (key.m <= 0) return;
  // An exchange between ranks must run on every rank whatever each one's timing chose.
  if (!norm.exchanges() && !GemvSettled(key)) {
    throw std::logic_error("a GEMM linked to a norm needs the GEMV kernel settled for its shape");
  }
  LaunchGemv(stream, x, w, out, key.m, key.n, key.k, key.in, key.out, GemvInput::kPlain, key.gemv_output(), {}, &norm);
}

bool Gemm::TakesGemv(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
                     ElemType in, ElemType out_type, bool add_to) {
  const Key key{m, n, k, in, out_type, add_to};
  if (m <= 0 || (!IsCapturing(stream) && !UseGemv(stream, key, x, w, out))) return false;
  return GemvSettled(key);
}

void Gemm::Run(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
               ElemType in, ElemType out_type, const GemvNorm* norm) {
  const Key key{m, n, k, in, out_type, false};
  if (norm) {
    RunLinked(stream, key, x, w, out, *norm);
  } else {
    RunKey(stream, key, x, w, out);
  }
}

bool Gemm::RunGateUpSilu(cudaStream_t stream, const void* x, const void* w, void* act, int64_t m, int64_t inter,
                         int64_t k, ElemType in, const GemvNorm* norm) {
  if (m <= 0 || !GemvSupports(x, w, m, inter, k, in, in, GemvInput::kPlain, GemvOutput::kSiluOfHalves, {}, norm) ||
      !GemvSettled(Key{m, 2 * inter, k, in, in, false})) {  // the gate/up product's own decision
    return false;
  }
  LaunchGemv(stream, x, w, act, m, inter, k, in, in, GemvInput::kPlain, GemvOutput::kSiluOfHalves, {}, norm);
  return true;
}

bool Gemm::RunQkvRope(cudaStream_t stream, const void* x, const void* w, const GemvRopeKv& rope, int64_t m,
                      int64_t n, int64_t k, ElemType in, const GemvNorm* norm) {
  if (m <= 0 || !GemvSupports(x, w, m, n, k, in, in, GemvInput::kPlain, GemvOutput::kRopeKvWrite, rope, norm) ||
      !GemvSettled(Key{m, n, k, in, in, false})) {  // the plain product's decision
    return false;
  }
  LaunchGemv(stream, x, w, nullptr, m, n, k, in, in, GemvInput::kPlain, GemvOutput::kRopeKvWrite, rope, norm);
  return true;
}

void Gemm::RunAddTo(cudaStream_t stream, const void* x, const void* w, float* residual, int64_t m, int64_t n,
                    int64_t k, ElemType in, const GemvNorm* norm) {
  const Key key{m, n, k, in, ElemType::kF32, true};
  if (norm) {
    RunLinked(stream, key, x, w, residual, *norm);
  } else {
    RunKey(stream, key, x, w, residual);
  }
}

void Gemm::RunSiluDownKey(cudaStream_t stream, const Key& key, const void* gate_up, void* act, const void* w,
                          void* out) {
  if (key.m <= 0) return;
  auto separate = [&](void* dst) {
    LaunchSiluMul(stream, key.in, gate_up, key.m, key.k, act);
    RunKey(stream, key, act, w, dst);
  };
  auto fused = [&](void* dst) { LaunchGemvFor(stream, key, gate_up, w, dst, GemvInput::kSiluOfGateUp); };
  if (!GemvSupports(gate_up, w, key.m, key.n, key.k, key.in, key.out, GemvInput::kSiluOfGateUp,
                    key.gemv_output()) ||
      !UseGemv(stream, key, act, w, out)) {
    separate(out);
    return;
  }
  // Every CTA of the fused kernel computes SiLU over the whole of k, which costs more than
  // the separate kernel saves when n is short or the SMs are busy: time both once per shape
  // (outside a capture and with memory for an adding GEMM's timing scratch; otherwise an
  // undecided shape takes the separate kernels).
  auto it = fuse_silu_.find(key);
  if (it == fuse_silu_.end()) {
    if (IsCapturing(stream)) {
      separate(out);
      return;
    }
    TimingOutput timing(stream, key.add_to, out, key.m, key.n);
    void* const target = timing.get();
    if (target == nullptr) {
      separate(out);
      return;
    }
    fused(target);  // each once untimed, to warm up
    separate(target);
    const bool fuse = FirstIsFaster(
        stream, [&] { for (int r = 0; r < kDecideReps; ++r) fused(target); },
        [&] { for (int r = 0; r < kDecideReps; ++r) separate(target); });
    it = fuse_silu_.emplace(key, fuse).first;
  }
  if (it->second) {
    fused(out);
  } else {
    separate(out);
  }
}

void Gemm::RunSiluDown(cudaStream_t stream, const void* gate_up, void* act, const void* w, void* out, int64_t m,
                       int64_t n, int64_t k, ElemType in, ElemType out_type) {
  RunSiluDownKey(stream, Key{m, n, k, in, out_type, false}, gate_up, act, w, out);
}

void Gemm::RunSiluDownAddTo(cudaStream_t stream, const void* gate_up, void* act, const void* w, float* residual,
                            int64_t m, int64_t n, int64_t k, ElemType in) {
  RunSiluDownKey(stream, Key{m, n, k, in, ElemType::kF32, true}, gate_up, act, w, residual);
}

bool Gemm::Prepare(cudaStream_t stream, int64_t m, int64_t n, int64_t k, ElemType in, ElemType out_type,
                   const void* w) {
  return PrepareKey(stream, Key{m, n, k, in, out_type, false}, w);
}

bool Gemm::PrepareAddTo(cudaStream_t stream, int64_t m, int64_t n, int64_t k, ElemType in, const void* w) {
  return PrepareKey(stream, Key{m, n, k, in, ElemType::kF32, true}, w);
}

bool Gemm::PrepareKey(cudaStream_t stream, const Key& key, const void* w) {
  const int64_t m = key.m, n = key.n, k = key.k;
  if (m <= 0 || n <= 0 || k <= 0) return false;
  if (IsCapturing(stream)) {
    throw std::runtime_error("Gemm::Prepare was called while its stream captures a CUDA graph; call it before capture");
  }
  const size_t w_bytes = static_cast<size_t>(n * k) * ElemSize(key.in);
  DeviceBuffer x_buf(std::max<size_t>(static_cast<size_t>(m * k) * ElemSize(key.in), 16));
  DeviceBuffer out_buf(std::max<size_t>(static_cast<size_t>(m * n) * ElemSize(key.out), 16));
  // 0x3C3C: bf16 0.0115, fp16 1.06 (finite; the values don't matter, only the time).
  TG_CUDA_CHECK(cudaMemsetAsync(x_buf.get(), 0x3C, x_buf.bytes(), stream));
  // x_buf stands in for a scratch W's alignment here.
  const bool gemv_ok = gemv_mode_ != GemvMode::kOff && GemvSupports(x_buf.get(), w ? w : x_buf.get(), m, n, k, key.in,
                                                                    key.out, GemvInput::kPlain, key.gemv_output());
  const bool decide = gemv_ok && gemv_mode_ == GemvMode::kAuto && use_gemv_.count(key) == 0;
  // A decode step reads W from memory: when W fits in L2, time over copies that together
  // exceed it threefold (fewer if GPU memory is short).
  const size_t l2 = static_cast<size_t>(l2_bytes_);
  size_t copies = 1;
  if (decide && w_bytes < 2 * l2) copies = std::min(kMaxScratchWeights, (3 * l2 + w_bytes - 1) / w_bytes);
  std::vector<const void*> ws;
  std::vector<DeviceBuffer> scratch;
  if (w != nullptr) ws.push_back(w);
  while (ws.size() < copies) {
    try {
      scratch.emplace_back(w_bytes);
    } catch (const std::runtime_error&) {
      cudaGetLastError();  // the failed cudaMalloc's error, so that later launch checks don't see it
      if (ws.empty()) {
        throw std::runtime_error("Gemm::Prepare: no GPU memory for a scratch weight of " + std::to_string(w_bytes) +
                                 " bytes; pass the real weight");
      }
      break;
    }
    TG_CUDA_CHECK(cudaMemsetAsync(scratch.back().get(), 0x3C, w_bytes, stream));
    ws.push_back(scratch.back().get());
  }
  RunLt(stream, key, x_buf.get(), ws[0], out_buf.get());  // tunes the m bucket, for any m
  bool gemv = gemv_ok;
  if (gemv && gemv_mode_ == GemvMode::kAuto) {
    auto it = use_gemv_.find(key);
    gemv = it != use_gemv_.end() ? it->second : DecideGemv(stream, key, x_buf.get(), ws, out_buf.get());
  }
  TG_CUDA_CHECK(cudaStreamSynchronize(stream));  // the scratch is freed on return
  return gemv;
}

}  // namespace cuda
}  // namespace tg
