// See ops.h.
#include "backend/cpu/ops.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/thread_pool.h"

namespace tg {
namespace cpu {

// Eight interleaved partial sums (lane i holds the products of elements i, i + 8,
// ...), combined pairwise at the end. Written with 8-float vectors so that one
// AVX2 register (or two SSE registers) holds the lanes; every variant performs
// the same float operations in the same order, so results are bit-identical
// whichever clone runs. No FMA: a fused multiply-add would round differently.
typedef float V8 __attribute__((vector_size(32)));
typedef float V8Unaligned __attribute__((vector_size(32), aligned(4), may_alias));
#define Load8(p) (*reinterpret_cast<const V8Unaligned*>(p))

static inline float Reduce8(const float* a) {
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

__attribute__((target_clones("avx2", "default"))) float Dot(const float* a, const float* b, int64_t k) {
  V8 acc = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) acc += Load8(a + i) * Load8(b + i);
  float lanes[8];
  __builtin_memcpy(lanes, &acc, sizeof lanes);
  for (; i < k; ++i) lanes[i & 7] += a[i] * b[i];
  return Reduce8(lanes);
}

// One x row against four rows of W: each x chunk is loaded once per four weight
// rows; per output the operations are exactly those of Dot().
__attribute__((target_clones("avx2", "default"))) static void Dot4(const float* x, const float* w0,
                                                                    const float* w1, const float* w2,
                                                                    const float* w3, int64_t k, float* out) {
  V8 a0 = {0, 0, 0, 0, 0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    V8 xv = Load8(x + i);
    a0 += xv * Load8(w0 + i);
    a1 += xv * Load8(w1 + i);
    a2 += xv * Load8(w2 + i);
    a3 += xv * Load8(w3 + i);
  }
  float l[4][8];
  __builtin_memcpy(l[0], &a0, sizeof l[0]);
  __builtin_memcpy(l[1], &a1, sizeof l[1]);
  __builtin_memcpy(l[2], &a2, sizeof l[2]);
  __builtin_memcpy(l[3], &a3, sizeof l[3]);
  for (; i < k; ++i) {
    l[0][i & 7] += x[i] * w0[i];
    l[1][i & 7] += x[i] * w1[i];
    l[2][i & 7] += x[i] * w2[i];
    l[3][i & 7] += x[i] * w3[i];
  }
  for (int r = 0; r < 4; ++r) out[r] = Reduce8(l[r]);
}

void Matmul(ThreadPool& pool, const float* x, const float* w, const float* bias, int64_t m, int64_t n, int64_t k,
            float* out) {
  // Aim for ~64k multiply-adds per task so that small layers stay on one thread.
  int64_t grain = std::max<int64_t>(4, 65536 / std::max<int64_t>(1, m * k));
  pool.ParallelFor(n, grain, [&](int64_t n_begin, int64_t n_end) {
    // Tile rows of W so that a tile stays in cache while every x row passes over it.
    const int64_t tile = std::max<int64_t>(4, (32 * 1024 / 4) / std::max<int64_t>(1, k)) & ~int64_t{3};
    for (int64_t t0 = n_begin; t0 < n_end; t0 += tile) {
      int64_t t1 = std::min(n_end, t0 + tile);
      for (int64_t row = 0; row < m; ++row) {
        const float* xr = x + row * k;
        float* o = out + row * n;
        int64_t j = t0;
        for (; j + 4 <= t1; j += 4) {
          Dot4(xr, w + j * k, w + (j + 1) * k, w + (j + 2) * k, w + (j + 3) * k, k, o + j);
        }
        for (; j < t1; ++j) o[j] = Dot(xr, w + j * k, k);
        if (bias) {
          for (int64_t b = t0; b < t1; ++b) o[b] += bias[b];
        }
      }
    }
  });
}

void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, double eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    float inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps));
    float* o = out + r * dim;
    for (int64_t i = 0; i < dim; ++i) o[i] = weight[i] * (xr[i] * inv);
  }
}

void SiluMul(const float* gate, const float* up, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void ApplyRope(float* x, int64_t heads, int64_t head_dim, int64_t position, const float* inv_freq) {
  int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    // The angle in float32 as Hugging Face forms it; cos/sin rounded from double.
    float angle = static_cast<float>(position) * inv_freq[i];
    float c = static_cast<float>(std::cos(static_cast<double>(angle)));
    float s = static_cast<float>(std::sin(static_cast<double>(angle)));
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + h * head_dim;
      float a = v[i];
      float b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

}  // namespace cpu
}  // namespace tg
