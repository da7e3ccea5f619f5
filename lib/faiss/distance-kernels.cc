// AVX2 + FMA versions of faiss' hot float distance kernels, replacing Debian's at link time.
//
// Why: Debian builds libfaiss.a 1.7.3 for baseline x86-64 (SSE2 only), where distances_simd.cpp
// compiles neither its SSE3 nor its AVX code: fvec_L2sqr / fvec_inner_product are a scalar loop with
// one serial addss chain (objdump of distances_simd.cpp.o), about 4 cycles per dimension. HNSW
// insertion and search, IVF-Flat list scans, exact search of few queries and PQ distance tables
// all go through these functions (k-means and large batches go through OpenBLAS's sgemm, which
// picks AVX2 at run time by itself).
//
// How: these definitions carry the same (C++-mangled) names as libfaiss.a's. Our object comes
// first on the link line and the link passes -Wl,--allow-multiple-definition, so ours are the ones
// in the addon; faiss' own code calls them through the PLT (it is compiled -fPIC), so every caller,
// even distances_simd.cpp's own fvec_*_ny_ref loops, lands here. Check with:
//   objdump -d build/native/faiss.node | grep -A3 '<_ZN5faiss10fvec_L2sqrEPKfS1_m>:'
// Which code runs is chosen once at load: AVX2 + FMA where the CPU (and OS) have them and
// CAH_FAISS_KERNELS is not "generic"; otherwise faiss' own reference functions (still in
// libfaiss.a under their _ref names), i.e. exactly what ran before. The AVX2 sums are ordered
// differently (8 lanes x 4 accumulators), so distances differ from the reference in the last bits,
// as they do between faiss' own generic and AVX2 builds. Below 8 dimensions (PQ sub-vectors) there
// is no full AVX2 lane: the reference functions run, so the results stay bit-identical (a scalar
// loop compiled here for FMA would be contracted into fused multiply-adds and round differently;
// the reference norm also sums in double).
#include <immintrin.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace faiss {
// defined in libfaiss.a (utils/distances_simd.cpp), not declared in its headers
float fvec_L2sqr_ref(const float* x, const float* y, size_t d);
float fvec_inner_product_ref(const float* x, const float* y, size_t d);
float fvec_norm_L2sqr_ref(const float* x, size_t d);
void fvec_L2sqr_ny_ref(float* dis, const float* x, const float* y, size_t d, size_t ny);
void fvec_inner_products_ny_ref(float* ip, const float* x, const float* y, size_t d, size_t ny);
}  // namespace faiss

namespace {

#define CAH_AVX2 __attribute__((target("avx2,fma")))

CAH_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

CAH_AVX2 float l2sqrAvx2(const float* x, const float* y, size_t d) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i));
    __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8));
    __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16));
    __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24));
    a0 = _mm256_fmadd_ps(d0, d0, a0);
    a1 = _mm256_fmadd_ps(d1, d1, a1);
    a2 = _mm256_fmadd_ps(d2, d2, a2);
    a3 = _mm256_fmadd_ps(d3, d3, a3);
  }
  for (; i + 8 <= d; i += 8) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i));
    a0 = _mm256_fmadd_ps(d0, d0, a0);
  }
  float res = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < d; i++) {
    const float t = x[i] - y[i];
    res += t * t;
  }
  return res;
}

CAH_AVX2 float innerProductAvx2(const float* x, const float* y, size_t d) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
  }
  for (; i + 8 <= d; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
  float res = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < d; i++) res += x[i] * y[i];
  return res;
}

CAH_AVX2 float normL2sqrAvx2(const float* x, size_t d) { return innerProductAvx2(x, x, d); }

bool chooseAvx2() {
  const char* forced = std::getenv("CAH_FAISS_KERNELS");
  if (forced && std::strcmp(forced, "generic") == 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// Set while the addon loads (before any faiss call); false (the reference path) until then.
const bool useAvx2 = chooseAvx2();

}  // namespace

namespace cah_faiss {
/** "avx2" or "generic": which distance kernels this process runs. */
const char* distanceKernels() { return useAvx2 ? "avx2" : "generic"; }
}  // namespace cah_faiss

namespace faiss {

float fvec_L2sqr(const float* x, const float* y, size_t d) {
  return useAvx2 && d >= 8 ? l2sqrAvx2(x, y, d) : fvec_L2sqr_ref(x, y, d);
}

float fvec_inner_product(const float* x, const float* y, size_t d) {
  return useAvx2 && d >= 8 ? innerProductAvx2(x, y, d) : fvec_inner_product_ref(x, y, d);
}

float fvec_norm_L2sqr(const float* x, size_t d) {
  return useAvx2 && d >= 8 ? normL2sqrAvx2(x, d) : fvec_norm_L2sqr_ref(x, d);
}

void fvec_L2sqr_ny(float* dis, const float* x, const float* y, size_t d, size_t ny) {
  if (!useAvx2 || d < 8) return fvec_L2sqr_ny_ref(dis, x, y, d, ny);
  for (size_t i = 0; i < ny; i++, y += d) dis[i] = l2sqrAvx2(x, y, d);
}

void fvec_inner_products_ny(float* ip, const float* x, const float* y, size_t d, size_t ny) {
  if (!useAvx2 || d < 8) return fvec_inner_products_ny_ref(ip, x, y, d, ny);
  for (size_t i = 0; i < ny; i++, y += d) ip[i] = innerProductAvx2(x, y, d);
}

}  // namespace faiss
