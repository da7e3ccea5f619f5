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
//
// An 8-bit copy of the lists (attachSq8Copy, kept by `run.ts back` beside the index): under load the
// scans of concurrent queries share the memory bus, so the scanner first reads each vector's one
// byte per value and reads its float16 codes only when the 8-bit score plus its error bound could
// enter the results: the same results, about half the bytes (1M x 512, 4 clients on 2 cores:
// 366-378 -> 456-459 queries/s; back README).
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/FaissAssert.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/utils/Heap.h>
#include "avx2-sums.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using idx_t = faiss::Index::idx_t;

// An 8-bit copy of an inner-product IVF-SQfp16 index's lists (attachSq8Copy), memory-mapped: per
// dimension i, code c stands for vmin[i] + c * step[i], within step[i] / 2 of the float16 value.
struct Sq8Copy {
  size_t d = 0;
  std::vector<float> vmin, step;
  std::vector<size_t> offset;  // per list: where its n x d codes start in the mapping
  const uint8_t* base = nullptr;
  void* map = nullptr;
  size_t mapLen = 0;
  ~Sq8Copy() {
    if (map) munmap(map, mapLen);
  }
};

// A query against 8-bit codes: approx(c) = q0 + sum_i qs[i] * c[i], with |approx - exact| <= slack for
// every vector of the index (exact: the float16 inner product, both as computed in float).
CAH_SIMD float approxInnerProduct(const float* qs, const uint8_t* c, size_t d) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qs + i), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qs + i + 8), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8))), a1);
  }
  float s = cah_faiss::simd::hsum(_mm256_add_ps(a0, a1));
  for (; i < d; i++) s += qs[i] * c[i];
  return s;
}

template <bool IP>
struct Fp16Scanner : faiss::InvertedListScanner {
  size_t d;
  const float* query = nullptr;
  // With an 8-bit copy (inner product only): each code is first scored on its 8-bit copy, and its
  // float16 distance is computed only if the 8-bit score, widened by the largest possible error,
  // could enter the heap. The heap then sees exactly the same distances in the same order as
  // without the copy: same results, bit for bit, with about half the bytes read per scan.
  std::shared_ptr<const Sq8Copy> sq8;
  std::vector<float> qs;
  float q0 = 0, slack = 0;
  const uint8_t* listSq8 = nullptr;

  Fp16Scanner(size_t d, bool storePairs, std::shared_ptr<const Sq8Copy> copy = nullptr)
      : faiss::InvertedListScanner(storePairs, nullptr), d(d), sq8(std::move(copy)) {
    code_size = 2 * d;
    keep_max = IP;
    if (sq8) qs.resize(d);
  }
  void set_query(const float* x) override {
    query = x;
    if (!sq8) return;
    // The 8-bit value is within step/2 of the float16 one: the exact sum is within
    // sum |q| step / 2 of the approximation; float rounding of both sums adds at most about
    // 2 d 2^-24 sum |q| |value| (doubled again here for margin).
    double q0d = 0, err = 0, mag = 0;
    for (size_t i = 0; i < d; i++) {
      qs[i] = x[i] * sq8->step[i];
      q0d += static_cast<double>(x[i]) * sq8->vmin[i];
      err += std::fabs(x[i]) * sq8->step[i] * 0.5;
      mag += std::fabs(x[i]) * std::max(std::fabs(sq8->vmin[i]), std::fabs(sq8->vmin[i] + 255 * sq8->step[i]));
    }
    q0 = static_cast<float>(q0d);
    slack = static_cast<float>(err * (1 + 1e-6) + (4.0 * static_cast<double>(d) + 8) * mag * std::ldexp(1.0, -24) + 1e-6);
  }
  void set_list(idx_t list, float) override {
    list_no = list;
    if (sq8) listSq8 = sq8->base + sq8->offset[list];
  }
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
      if (IP && sq8 && q0 + approxInnerProduct(qs.data(), listSq8 + j * d, d) + slack <= dis[0]) continue;
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
  std::shared_ptr<const Sq8Copy> sq8;

  bool fast() const {
    return sq.qtype == faiss::ScalarQuantizer::QT_fp16 && !by_residual && (metric_type == faiss::METRIC_INNER_PRODUCT || metric_type == faiss::METRIC_L2);
  }

  faiss::InvertedListScanner* get_InvertedListScanner(bool storePairs, const faiss::IDSelector* sel) const override {
    if (sel || !fast()) return faiss::IndexIVFScalarQuantizer::get_InvertedListScanner(storePairs, sel);
    if (metric_type == faiss::METRIC_INNER_PRODUCT) return new Fp16Scanner<true>(d, storePairs, sq8);
    return new Fp16Scanner<false>(d, storePairs);
  }
};

const bool canScanFp16 = cah_faiss::simd::cpuRunsSums();

const char kSq8Magic[8] = {'C', 'A', 'H', 'S', 'Q', '8', 0, 1};

struct Sq8Header {
  char magic[8];
  uint64_t d, nlist, ntotal, indexSize;
  int64_t indexMtimeNs;
};

size_t roundUp64(size_t n) { return (n + 63) & ~static_cast<size_t>(63); }

/** Bytes before the codes: header, list sizes, vmin, step. */
size_t sq8Preamble(size_t d, size_t nlist) { return roundUp64(sizeof(Sq8Header) + nlist * 8 + 2 * d * sizeof(float)); }

struct IndexFileStamp {
  uint64_t size;
  int64_t mtimeNs;
};

IndexFileStamp stampOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + path + ": " + std::strerror(errno));
  return {static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

/** The copy mapped from `path` if it matches the index (same file stamp, shape and list sizes), else null. */
std::shared_ptr<Sq8Copy> mapSq8Copy(const std::string& path, const IvfSqFp16& ivf, IndexFileStamp stamp) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < sizeof(Sq8Header)) {
    close(fd);
    return nullptr;
  }
  void* map = mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return nullptr;
  auto copy = std::make_shared<Sq8Copy>();
  copy->map = map;
  copy->mapLen = st.st_size;
  Sq8Header h;
  std::memcpy(&h, map, sizeof h);
  const size_t d = ivf.d, nlist = ivf.nlist;
  if (std::memcmp(h.magic, kSq8Magic, 8) != 0 || h.d != d || h.nlist != nlist || h.ntotal != static_cast<uint64_t>(ivf.ntotal) ||
      h.indexSize != stamp.size || h.indexMtimeNs != stamp.mtimeNs)
    return nullptr;
  const auto* bytes = static_cast<const uint8_t*>(map);
  std::vector<uint64_t> sizes(nlist);
  std::memcpy(sizes.data(), bytes + sizeof h, nlist * 8);
  copy->d = d;
  copy->vmin.resize(d);
  copy->step.resize(d);
  std::memcpy(copy->vmin.data(), bytes + sizeof h + nlist * 8, d * sizeof(float));
  std::memcpy(copy->step.data(), bytes + sizeof h + nlist * 8 + d * sizeof(float), d * sizeof(float));
  size_t at = sq8Preamble(d, nlist);
  copy->offset.resize(nlist);
  for (size_t l = 0; l < nlist; l++) {
    if (sizes[l] != ivf.invlists->list_size(l)) return nullptr;
    copy->offset[l] = at;
    at += roundUp64(sizes[l] * d);
  }
  if (at != copy->mapLen) return nullptr;
  copy->base = bytes;
  return copy;
}

CAH_SIMD float halfToFloat(uint16_t h) { return _cvtsh_ss(h); }

/** Writes the 8-bit copy of `ivf`'s lists to path (through a temporary file and a rename). */
void writeSq8Copy(const std::string& path, const IvfSqFp16& ivf, IndexFileStamp stamp) {
  const size_t d = ivf.d, nlist = ivf.nlist;
  std::vector<float> vmin(d, INFINITY), vmax(d, -INFINITY);
  for (size_t l = 0; l < nlist; l++) {
    const size_t n = ivf.invlists->list_size(l);
    if (n == 0) continue;
    faiss::InvertedLists::ScopedCodes codes(ivf.invlists, l);
    const auto* y = reinterpret_cast<const uint16_t*>(codes.get());
    for (size_t r = 0; r < n; r++) {
      for (size_t i = 0; i < d; i++) {
        const float v = halfToFloat(y[r * d + i]);
        vmin[i] = std::min(vmin[i], v);
        vmax[i] = std::max(vmax[i], v);
      }
    }
  }
  std::vector<float> step(d);
  for (size_t i = 0; i < d; i++) {
    if (!(vmin[i] <= vmax[i]) || !std::isfinite(vmin[i]) || !std::isfinite(vmax[i])) vmin[i] = vmax[i] = 0;
    step[i] = (vmax[i] - vmin[i]) / 255.0f;
  }
  const std::string tmp = path + ".tmp-" + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  auto fail = [&](const char* what) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw std::runtime_error(std::string(what) + " " + tmp + ": " + std::strerror(errno));
  };
  Sq8Header h{};
  std::memcpy(h.magic, kSq8Magic, 8);
  h.d = d;
  h.nlist = nlist;
  h.ntotal = ivf.ntotal;
  h.indexSize = stamp.size;
  h.indexMtimeNs = stamp.mtimeNs;
  std::vector<uint8_t> pre(sq8Preamble(d, nlist), 0);
  std::memcpy(pre.data(), &h, sizeof h);
  for (size_t l = 0; l < nlist; l++) {
    const uint64_t n = ivf.invlists->list_size(l);
    std::memcpy(pre.data() + sizeof h + l * 8, &n, 8);
  }
  std::memcpy(pre.data() + sizeof h + nlist * 8, vmin.data(), d * sizeof(float));
  std::memcpy(pre.data() + sizeof h + nlist * 8 + d * sizeof(float), step.data(), d * sizeof(float));
  if (std::fwrite(pre.data(), 1, pre.size(), f) != pre.size()) fail("cannot write");
  std::vector<uint8_t> out;
  for (size_t l = 0; l < nlist; l++) {
    const size_t n = ivf.invlists->list_size(l);
    out.assign(roundUp64(n * d), 0);
    if (n > 0) {
      faiss::InvertedLists::ScopedCodes codes(ivf.invlists, l);
      const auto* y = reinterpret_cast<const uint16_t*>(codes.get());
      for (size_t r = 0; r < n; r++) {
        for (size_t i = 0; i < d; i++) {
          const double c = step[i] > 0 ? std::nearbyint((static_cast<double>(halfToFloat(y[r * d + i])) - vmin[i]) / step[i]) : 0;
          out[r * d + i] = static_cast<uint8_t>(std::min(255.0, std::max(0.0, c)));
        }
      }
    }
    if (std::fwrite(out.data(), 1, out.size(), f) != out.size()) fail("cannot write");
  }
  if (std::fflush(f) != 0 || fsync(fileno(f)) != 0) fail("cannot flush");
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot close " + tmp + ": " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
}

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

/**
 * Gives an inner-product IVF-SQfp16 index with our scanner an 8-bit copy of its lists at
 * `copyPath` (Fp16Scanner: the same results from about half the bytes per scan), written there
 * first when missing or made from another index file (`indexPath`'s size and mtime, the shape and
 * the list sizes are checked). Returns "attached", "built", or "unsupported: why" (nothing changed).
 */
std::string attachSq8Copy(faiss::Index* index, const std::string& copyPath, const std::string& indexPath) {
  auto* ivf = dynamic_cast<IvfSqFp16*>(index);
  if (!ivf || !ivf->fast()) return "unsupported: not an IVF-SQfp16 index with our float16 scanner";
  if (ivf->metric_type != faiss::METRIC_INNER_PRODUCT) return "unsupported: not inner product";
  const IndexFileStamp stamp = stampOf(indexPath);
  if (auto copy = mapSq8Copy(copyPath, *ivf, stamp)) {
    ivf->sq8 = std::move(copy);
    return "attached";
  }
  writeSq8Copy(copyPath, *ivf, stamp);
  auto copy = mapSq8Copy(copyPath, *ivf, stamp);
  if (!copy) throw std::runtime_error(copyPath + " was written but does not read back");
  ivf->sq8 = std::move(copy);
  return "built";
}

}  // namespace cah_faiss
