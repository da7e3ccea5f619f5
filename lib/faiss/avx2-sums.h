// The inner product and squared L2 distance of a float32 query with a float32 or float16 vector,
// in AVX2 + FMA: 4 accumulators of 8 lanes over 32 values at a time, then 8 at a time, then the
// last d % 8 values as one zero-padded lane, then one horizontal sum. distance-kernels.cc (faiss'
// float32 kernels) and ivf-sq-fp16.cc (float16 IVF lists) both sum through these templates, so a
// float16 vector and its float32 copy give the same distance bit for bit: IVF-SQfp16 and IVF-Flat
// return the same results on float16 embeddings. (A scalar tail loop would be left to the
// compiler, which vectorises it one way in one file and another way in the other.)
// Callers run them only where cpuRunsSums() says the CPU has AVX2, FMA and F16C.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#define CAH_SIMD __attribute__((target("avx2,fma,f16c")))

namespace cah_faiss::simd {

/** Whether this CPU (and OS) run the templates below: AVX2, FMA and F16C. */
inline bool cpuRunsSums() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

CAH_SIMD inline __m256 load8(const float* y) { return _mm256_loadu_ps(y); }
CAH_SIMD inline __m256 load8(const uint16_t* y) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y))); }

/** The r < 8 values at y, zero-padded to a lane. */
template <typename T>
CAH_SIMD inline __m256 tail(const T* y, size_t r) {
  alignas(32) T b[8] = {};
  std::memcpy(b, y, r * sizeof(T));
  return load8(b);
}

CAH_SIMD inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <typename T>
CAH_SIMD inline float innerProduct(const float* x, const T* y, size_t d) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    a0 = _mm256_fmadd_ps(load8(x + i), load8(y + i), a0);
    a1 = _mm256_fmadd_ps(load8(x + i + 8), load8(y + i + 8), a1);
    a2 = _mm256_fmadd_ps(load8(x + i + 16), load8(y + i + 16), a2);
    a3 = _mm256_fmadd_ps(load8(x + i + 24), load8(y + i + 24), a3);
  }
  for (; i + 8 <= d; i += 8) a0 = _mm256_fmadd_ps(load8(x + i), load8(y + i), a0);
  if (i < d) a0 = _mm256_fmadd_ps(tail(x + i, d - i), tail(y + i, d - i), a0);
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

template <typename T>
CAH_SIMD inline float l2sqr(const float* x, const T* y, size_t d) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    const __m256 d0 = _mm256_sub_ps(load8(x + i), load8(y + i));
    const __m256 d1 = _mm256_sub_ps(load8(x + i + 8), load8(y + i + 8));
    const __m256 d2 = _mm256_sub_ps(load8(x + i + 16), load8(y + i + 16));
    const __m256 d3 = _mm256_sub_ps(load8(x + i + 24), load8(y + i + 24));
    a0 = _mm256_fmadd_ps(d0, d0, a0);
    a1 = _mm256_fmadd_ps(d1, d1, a1);
    a2 = _mm256_fmadd_ps(d2, d2, a2);
    a3 = _mm256_fmadd_ps(d3, d3, a3);
  }
  for (; i + 8 <= d; i += 8) {
    const __m256 d0 = _mm256_sub_ps(load8(x + i), load8(y + i));
    a0 = _mm256_fmadd_ps(d0, d0, a0);
  }
  if (i < d) {
    const __m256 d0 = _mm256_sub_ps(tail(x + i, d - i), tail(y + i, d - i));
    a0 = _mm256_fmadd_ps(d0, d0, a0);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

}  // namespace cah_faiss::simd
