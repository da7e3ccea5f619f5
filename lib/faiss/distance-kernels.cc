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
// Which code runs is chosen once at load: AVX2 + FMA (and F16C, which every AVX2 CPU has: the
// sums in avx2-sums.h are shared with the float16 kernels) where the CPU (and OS) have them and
// CAH_FAISS_KERNELS is not "generic"; otherwise faiss' own reference functions (still in
// libfaiss.a under their _ref names), i.e. exactly what ran before. The AVX2 sums are ordered
// differently (8 lanes x 4 accumulators), so distances differ from the reference in the last bits,
// as they do between faiss' own generic and AVX2 builds. Below 8 dimensions (PQ sub-vectors) there
// is no full AVX2 lane: the reference functions run, so the results stay bit-identical (a scalar
// loop compiled here for FMA would be contracted into fused multiply-adds and round differently;
// the reference norm also sums in double).
#include "avx2-sums.h"

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

CAH_SIMD float l2sqrAvx2(const float* x, const float* y, size_t d) { return cah_faiss::simd::l2sqr(x, y, d); }

CAH_SIMD float innerProductAvx2(const float* x, const float* y, size_t d) { return cah_faiss::simd::innerProduct(x, y, d); }

CAH_SIMD float normL2sqrAvx2(const float* x, size_t d) { return innerProductAvx2(x, x, d); }

bool chooseAvx2() {
  const char* forced = std::getenv("CAH_FAISS_KERNELS");
  if (forced && std::strcmp(forced, "generic") == 0) return false;
  return cah_faiss::simd::cpuRunsSums();
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
