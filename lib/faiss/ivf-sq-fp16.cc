// IVF lists of float16 codes (faiss IVF{c},SQfp16 without residuals) scanned with AVX2 + F16C.
//
// Why: CLIP embeddings reach the index as float16 (inference writes float16 npy files), so
// float16 codes hold them exactly, in half the bytes of IVF-Flat's float32; an IVF list scan is
// bound by the memory bus (1M x 512 IVF2048,Flat at nprobe 104 reads 104 MB per query), so half the
// bytes is nearly half the time, and half the RAM or page cache for the same index. Debian's
// faiss 1.7.3 is built for baseline x86-64 and decodes SQfp16 codes one value at a time: 15-16 ms
// per query against its Flat scan's 2.0 ms (200,000 x 512, IVF256, nprobe 32, memory-mapped; the
// by-residual SQfp16 that our scanner leaves to faiss), so without this the smaller index would be
// the much slower one.
//
// How: faiss builds and reads IndexIVFScalarQuantizer as always; `withFastFp16Scan` moves such an
// index (fp16 codes, not by residual, inner product or L2) into a subclass whose only change is
// the list scanner: faiss' own search, search_and_reconstruct, parallel modes, memory-mapped lists
// and write_index all run unchanged (the file is a plain IVF-SQfp16, read by any faiss). The
// kernel sums in the same order as our IVF-Flat kernel (distance-kernels.cc) on the same float32
// values, so the distances equal IVF-Flat's on float16 input bit for bit. Without AVX2 + F16C
// the index is left as faiss made it.
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/FaissAssert.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/utils/Heap.h>
#include "avx2-sums.h"

#include <memory>

namespace {

using idx_t = faiss::Index::idx_t;

template <bool IP>
struct Fp16Scanner : faiss::InvertedListScanner {
  size_t d;
  const float* query = nullptr;

  Fp16Scanner(size_t d, bool storePairs) : faiss::InvertedListScanner(storePairs, nullptr), d(d) {
    code_size = 2 * d;
    keep_max = IP;
  }
  void set_query(const float* x) override { query = x; }
  void set_list(idx_t list, float) override { list_no = list; }
  CAH_SIMD float distance(const uint8_t* code) const {
    const auto* y = reinterpret_cast<const uint16_t*>(code);
    return IP ? cah_faiss::simd::innerProduct(query, y, d) : cah_faiss::simd::l2sqr(query, y, d);
  }
  float distance_to_code(const uint8_t* code) const override { return distance(code); }
  // faiss' default loop, without a virtual call per code: keep the k best in the result heap
  // (a min-heap of similarities for inner product, a max-heap of distances for L2).
  size_t scan_codes(size_t n, const uint8_t* codes, const idx_t* ids, float* dis, idx_t* labels, size_t k) const override {
    size_t updates = 0;
    for (size_t j = 0; j < n; j++, codes += code_size) {
      const float v = distance(codes);
      if (IP ? v > dis[0] : v < dis[0]) {
        const idx_t id = store_pairs ? static_cast<idx_t>(faiss::lo_build(list_no, j)) : ids[j];
        if (IP) faiss::minheap_replace_top(k, dis, labels, v, id);
        else faiss::maxheap_replace_top(k, dis, labels, v, id);
        updates++;
      }
    }
    return updates;
  }
};

struct IvfSqFp16 : faiss::IndexIVFScalarQuantizer {
  explicit IvfSqFp16(const faiss::IndexIVFScalarQuantizer& from) : faiss::IndexIVFScalarQuantizer(from) {}

  bool fast() const {
    return sq.qtype == faiss::ScalarQuantizer::QT_fp16 && !by_residual && (metric_type == faiss::METRIC_INNER_PRODUCT || metric_type == faiss::METRIC_L2);
  }

  faiss::InvertedListScanner* get_InvertedListScanner(bool storePairs, const faiss::IDSelector* sel) const override {
    if (sel || !fast()) return faiss::IndexIVFScalarQuantizer::get_InvertedListScanner(storePairs, sel);
    if (metric_type == faiss::METRIC_INNER_PRODUCT) return new Fp16Scanner<true>(d, storePairs);
    return new Fp16Scanner<false>(d, storePairs);
  }
};

const bool canScanFp16 = cah_faiss::simd::cpuRunsSums();

}  // namespace

namespace cah_faiss {

/** `index` itself, or, for an IVF-SQfp16 and a CPU with AVX2 + F16C, the same index with our scanner. */
std::unique_ptr<faiss::Index> withFastFp16Scan(std::unique_ptr<faiss::Index> index) {
  auto* sq = dynamic_cast<faiss::IndexIVFScalarQuantizer*>(index.get());
  if (!canScanFp16 || !sq || dynamic_cast<IvfSqFp16*>(sq) || sq->sq.qtype != faiss::ScalarQuantizer::QT_fp16) return index;
  // The copy shares the quantizer and lists; the original gives up owning them and goes.
  auto fast = std::make_unique<IvfSqFp16>(*sq);
  sq->own_fields = false;
  sq->own_invlists = false;
  return fast;
}

/** Whether this process scans IVF-SQfp16 lists with withFastFp16Scan's kernel. */
bool fastFp16Scan() { return canScanFp16; }

}  // namespace cah_faiss
