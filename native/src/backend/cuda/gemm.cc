// See gemm.h. Row-major out[m, n] = x[m, k] · w[n, k]ᵀ is, in cuBLASLt's
// column-major terms, outᵀ (n × m, ld n) = op_T(W as k × n, ld k) · (xᵀ as k × m, ld k):
// the "TN" GEMM with M = n, N = m, K = k.
#include "backend/cuda/gemm.h"

#include <stdexcept>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include <string>

namespace tg {
namespace cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's recommendation for Hopper
constexpr int kTuneCandidates = 8;              // heuristic results timed per bucket

cudaDataType_t DataType(ElemType t) {
  switch (t) {
    case ElemType::kF32: return CUDA_R_32F;
    case ElemType::kBF16: return CUDA_R_16BF;
    case ElemType::kF16: return CUDA_R_16F;
  }
  return CUDA_R_32F;
}

// Row counts share an algorithm within a power-of-two bucket (1, 2, 4, ..., then 8192+ exact multiples).
int64_t Bucket(int64_t m) {
  int64_t b = 1;
  while (b < m && b < 8192) b <<= 1;
  return b < m ? ((m + 8191) / 8192) * 8192 : b;
}

}  // namespace

struct Gemm::Plan {
  const lt::Api* api = nullptr;
  lt::MatmulDesc desc = nullptr;
  lt::MatrixLayout a = nullptr, b = nullptr, c = nullptr;
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
}

Gemm::~Gemm() {
  plans_.clear();
  if (handle_) api_.Destroy(handle_);
}

Gemm::Plan& Gemm::PlanFor(int64_t m, int64_t n, int64_t k, ElemType in, ElemType out) {
  Key key{m, n, k, static_cast<int>(in), static_cast<int>(out)};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  p->api = &api_;
  lt::Check(api_.MatmulDescCreate(&p->desc, lt::kCompute32F, CUDA_R_32F), "matmul desc create");
  lt::Operation ta = lt::kOpT, tb = lt::kOpN;
  lt::Check(api_.MatmulDescSetAttribute(p->desc, lt::kMatmulDescTransA, &ta, sizeof ta), "set transa");
  lt::Check(api_.MatmulDescSetAttribute(p->desc, lt::kMatmulDescTransB, &tb, sizeof tb), "set transb");
  lt::Check(api_.MatrixLayoutCreate(&p->a, DataType(in), k, n, k), "layout A");
  lt::Check(api_.MatrixLayoutCreate(&p->b, DataType(in), k, m, k), "layout B");
  lt::Check(api_.MatrixLayoutCreate(&p->c, DataType(out), n, m, n), "layout C");
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
  const float alpha = 1.0f, beta = 0.0f;
  return api_.Matmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, &algo, workspace_.get(),
                     workspace_.bytes(), stream);
}

lt::MatmulAlgo Gemm::Tune(const Plan& p, cudaStream_t stream, const void* x, const void* w, void* out) {
  std::vector<lt::MatmulAlgo> candidates = Candidates(p, kTuneCandidates);
  if (candidates.size() == 1) return candidates[0];
  cudaEvent_t start, stop;
  TG_CUDA_CHECK(cudaEventCreate(&start));
  TG_CUDA_CHECK(cudaEventCreate(&stop));
  float best_ms = 0.0f;
  size_t best = 0;
  bool any = false;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (Launch(p, candidates[i], stream, x, w, out) != lt::kStatusSuccess) continue;  // warm-up, and a validity check
    TG_CUDA_CHECK(cudaEventRecord(start, stream));
    for (int r = 0; r < 3; ++r) Launch(p, candidates[i], stream, x, w, out);
    TG_CUDA_CHECK(cudaEventRecord(stop, stream));
    TG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (!any || ms < best_ms) {
      best_ms = ms;
      best = i;
      any = true;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return candidates[best];
}

void Gemm::Run(cudaStream_t stream, const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
               ElemType in, ElemType out_type) {
  if (m <= 0) return;
  Plan& p = PlanFor(m, n, k, in, out_type);
  if (!p.has_algo) {
    // One algorithm per (m bucket, n, k, types), timed on the first shape of the bucket that runs.
    Key bucket_key{Bucket(m), n, k, static_cast<int>(in), static_cast<int>(out_type)};
    auto it = algos_.find(bucket_key);
    if (it == algos_.end()) it = algos_.emplace(bucket_key, Tune(p, stream, x, w, out)).first;
    p.algo = it->second;
    p.has_algo = true;
  }
  if (Launch(p, p.algo, stream, x, w, out) != lt::kStatusSuccess) {
    // The bucket's algorithm does not suit this exact m: take the heuristic's own pick for it.
    p.algo = Candidates(p, 1)[0];
    lt::Check(Launch(p, p.algo, stream, x, w, out), "matmul");
  }
}

}  // namespace cuda
}  // namespace tg
