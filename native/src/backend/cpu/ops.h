// The CPU backend's kernels, in float32. Every output element is computed by
// the same sequence of operations whatever the batch around it, so a sequence
// gets bit-identical results alone or batched with others.
#pragma once
#include <cmath>
#include <cstdint>

namespace tg {

class ThreadPool;

namespace cpu {

// out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]): x·Wᵀ with W stored [N, K] as in
// Hugging Face Linear layers. Split over threads by rows of W.
void Matmul(ThreadPool& pool, const float* x, const float* w, const float* bias, int64_t m, int64_t n,
            int64_t k, float* out);

// Dot product with a fixed summation order (eight interleaved partial sums).
float Dot(const float* a, const float* b, int64_t k);

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for `rows` rows of `dim`.
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, double eps, float* out);

// out[i] = silu(gate[i]) * up[i].
void SiluMul(const float* gate, const float* up, int64_t count, float* out);

// Rotates one token's `heads` heads of `head_dim` in place by Hugging Face's
// rotate_half convention (first half pairs with second half), with the
// per-frequency angles position * inv_freq[i], i < head_dim / 2.
void ApplyRope(float* x, int64_t heads, int64_t head_dim, int64_t position, const float* inv_freq);

// A dot product short enough to inline (attention over one head's few dims).
inline float SmallDot(const float* a, const float* b, int64_t k) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  int64_t i = 0;
  for (; i + 4 <= k; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < k; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

// Softmax-weighted sum for one query head over `count` keys/values:
// out = softmax(q·k_j * scale) · v_j. `key(j)` / `value(j)` return pointers to head_dim floats.
template <typename KeyFn, typename ValueFn>
void AttendOneHead(const float* q, int64_t head_dim, int64_t count, float scale, KeyFn key, ValueFn value,
                   float* scores, float* out) {
  float max_score = -3.4e38f;
  for (int64_t j = 0; j < count; ++j) {
    float s = SmallDot(q, key(j), head_dim) * scale;
    scores[j] = s;
    if (s > max_score) max_score = s;
  }
  double sum = 0.0;
  for (int64_t j = 0; j < count; ++j) {
    float e = std::exp(scores[j] - max_score);
    scores[j] = e;
    sum += e;
  }
  float inv = static_cast<float>(1.0 / sum);
  for (int64_t d = 0; d < head_dim; ++d) out[d] = 0.0f;
  for (int64_t j = 0; j < count; ++j) {
    const float* v = value(j);
    float p = scores[j] * inv;
    for (int64_t d = 0; d < head_dim; ++d) out[d] += p * v[d];
  }
}

}  // namespace cpu
}  // namespace tg
