// Refinement scans of progressive JPEGs (ITU T.81 G.1.2.3), applied to libjpeg's coefficients.
// See progressive-refine.h for why.
#include "progressive-refine.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace progressive {
namespace {

// kNatural[k]: the natural (row-major) index of the k-th coefficient in zigzag order.
constexpr int kNatural[64] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,  12, 19, 26, 33, 40, 48,
    41, 34, 27, 20, 13, 6,  7,  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23,
    30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
};

// kZigzagBits.table[i][b]: the zigzag-order bit mask of natural positions 8i..8i+7 whose bits are set in b.
struct ZigzagBits {
  uint64_t table[8][256];
  ZigzagBits() {
    int zigzagOf[64];
    for (int k = 0; k < 64; k++) zigzagOf[kNatural[k]] = k;
    for (int i = 0; i < 8; i++) {
      for (int b = 0; b < 256; b++) {
        uint64_t m = 0;
        for (int j = 0; j < 8; j++) {
          if (b & (1 << j)) m |= uint64_t{1} << zigzagOf[8 * i + j];
        }
        table[i][b] = m;
      }
    }
  }
};
const ZigzagBits kZigzagBits;

// Bit k set when the block's k-th coefficient in zigzag order is nonzero.
inline uint64_t NonzeroMask(const int16_t* block) {
  uint64_t natural = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  for (int i = 0; i < 4; i++) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * i + 8));
    __m128i zeros = _mm_packs_epi16(_mm_cmpeq_epi16(a, zero), _mm_cmpeq_epi16(b, zero));
    natural |= static_cast<uint64_t>(~_mm_movemask_epi8(zeros) & 0xFFFF) << (16 * i);
  }
#else
  for (int i = 0; i < 64; i++) natural |= static_cast<uint64_t>(block[i] != 0) << i;
#endif
  uint64_t m = 0;
  for (int i = 0; i < 8; i++) m |= kZigzagBits.table[i][(natural >> (8 * i)) & 0xFF];
  return m;
}

// Bits lo..63.
inline uint64_t From(int lo) { return ~uint64_t{0} << lo; }
// Bits 0..hi-1 (hi <= 64).
inline uint64_t Below(int hi) { return hi >= 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1; }

// Bit b of kReversed[x] is bit 7 - b of x.
struct ReversedBytes {
  uint8_t table[256];
  ReversedBytes() {
    for (int x = 0; x < 256; x++) {
      int r = 0;
      for (int b = 0; b < 8; b++) r |= ((x >> b) & 1) << (7 - b);
      table[x] = static_cast<uint8_t>(r);
    }
  }
};
const ReversedBytes kReversed;

inline uint32_t Reverse16(uint32_t x) { return (kReversed.table[x & 0xFF] << 8) | kReversed.table[(x >> 8) & 0xFF]; }

// Reader of one entropy-coded segment (the bytes between two markers, still stuffed). JPEG packs bits
// most significant first; this reader holds each byte bit-reversed so that the next bit is bit 0,
// and n bits taken at once come out first-read lowest: the order in which pdep deposits them.
class BitReader {
 public:
  BitReader(const uint8_t* begin, const uint8_t* end) : p_(begin), end_(end) {}

  void Refill() {
    if (end_ - p_ >= 8) {
      uint64_t w;
      std::memcpy(&w, p_, 8);
      const uint64_t notW = ~w;
      // No 0xFF among the 8 bytes: no stuffing to undo, take as many whole bytes as fit.
      if (((notW - 0x0101010101010101ull) & ~notW & 0x8080808080808080ull) == 0) {
        w = ((w >> 4) & 0x0F0F0F0F0F0F0F0Full) | ((w & 0x0F0F0F0F0F0F0F0Full) << 4);
        w = ((w >> 2) & 0x3333333333333333ull) | ((w & 0x3333333333333333ull) << 2);
        w = ((w >> 1) & 0x5555555555555555ull) | ((w & 0x5555555555555555ull) << 1);
        const int bytes = (64 - count_) >> 3;
        bits_ |= (bytes == 8 ? w : w & ((uint64_t{1} << (8 * bytes)) - 1)) << count_;
        count_ += 8 * bytes;
        p_ += bytes;
        return;
      }
    }
    while (count_ <= 56) {
      uint64_t byte = 0;
      if (p_ < end_) {
        byte = *p_++;
        if (byte == 0xFF) {
          if (p_ < end_ && *p_ == 0) p_++;
          else broken_ = true;  // segments are cut at markers, so this cannot happen in clean data
        }
      } else {
        padding_ += 8;
      }
      bits_ |= static_cast<uint64_t>(kReversed.table[byte]) << count_;
      count_ += 8;
    }
  }
  // The next n (<= 56) bits, the first in bit 0.
  uint64_t Take(int n) {
    if (count_ < n) Refill();
    const uint64_t v = bits_ & ((uint64_t{1} << n) - 1);
    bits_ >>= n;
    count_ -= n;
    return v;
  }
  // The same for n <= 64.
  uint64_t TakeMany(int n) {
    if (n <= 56) return Take(n);
    const uint64_t low = Take(32);
    return low | Take(n - 32) << 32;
  }
  int Bit() { return static_cast<int>(Take(1)); }
  // n (<= 16) bits read as a most-significant-first integer, as JPEG's EOB run lengths are.
  int Integer(int n) { return static_cast<int>(Reverse16(static_cast<uint32_t>(Take(n))) >> (16 - n)); }
  // The next 16 bits, the first in bit 0.
  uint32_t Peek16() {
    if (count_ < 16) Refill();
    return static_cast<uint32_t>(bits_ & 0xFFFF);
  }
  void Skip(int n) {
    bits_ >>= n;
    count_ -= n;
  }
  // Whether the decoder read past the segment's data (libjpeg would warn and pad with zeros).
  bool Overran() const { return broken_ || count_ < padding_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  uint64_t bits_ = 0;
  int count_ = 0;
  int padding_ = 0;
  bool broken_ = false;
};

constexpr int kLookahead = 9;

class HuffmanDecoder {
 public:
  // False for a table libjpeg would reject (codes that overflow their length).
  bool Init(const HuffmanTable& t) {
    std::memcpy(symbols_, t.symbols, sizeof symbols_);
    std::memset(fast_, 0, sizeof fast_);
    int32_t code = 0;
    int index = 0;
    for (int len = 1; len <= 16; len++) {
      valueIndex_[len] = index;
      minCode_[len] = code;
      for (int i = 0; i < t.counts[len]; i++, index++, code++) {
        if (len <= kLookahead) {
          // The lookahead index holds the next bits first-read lowest, so the code's bits reversed.
          const int reversed = static_cast<int>(Reverse16(static_cast<uint32_t>(code)) >> (16 - len));
          for (int fill = 0; fill < (1 << (kLookahead - len)); fill++) {
            fast_[reversed | (fill << len)] = static_cast<uint16_t>((len << 8) | t.symbols[index]);
          }
        }
      }
      maxCode_[len] = t.counts[len] ? code - 1 : -1;
      if (code >= (1 << len)) return false;
      code <<= 1;
    }
    return true;
  }
  // The next symbol, or -1 for a code no table entry matches.
  int Decode(BitReader& br) const {
    const uint32_t look = br.Peek16();
    const uint16_t e = fast_[look & ((1 << kLookahead) - 1)];
    if (e != 0) {
      br.Skip(e >> 8);
      return e & 0xFF;
    }
    const uint32_t msbFirst = Reverse16(look);
    for (int len = kLookahead + 1; len <= 16; len++) {
      const int32_t code = static_cast<int32_t>(msbFirst >> (16 - len));
      if (code <= maxCode_[len]) {
        br.Skip(len);
        return symbols_[valueIndex_[len] + code - minCode_[len]];
      }
    }
    return -1;
  }

 private:
  uint16_t fast_[1 << kLookahead];
  int32_t maxCode_[17] = {0};
  int32_t minCode_[17] = {0};
  int valueIndex_[17] = {0};
  uint8_t symbols_[256];
};

// Adds the refinement bit to each coefficient in flips (zigzag order): away from zero, as T.81
// G.1.2.3 has it, and only where that bit is still clear (libjpeg's guard against bad data).
inline void ApplyCorrections(int16_t* block, uint64_t flips, int p1) {
  while (flips != 0) {
    int16_t& c = block[kNatural[__builtin_ctzll(flips)]];
    flips &= flips - 1;
    const int v = c, sign = v >> 31;  // 0 or -1
    c = static_cast<int16_t>(v + (((p1 ^ sign) - sign) & -static_cast<int>((v & p1) == 0)));
  }
}

inline int ReadBE16(const uint8_t* p) { return (p[0] << 8) | p[1]; }
inline int CeilDiv(int a, int b) { return (a + b - 1) / b; }

struct Frame {
  const uint8_t* data;
  int width, height, maxH, maxV;
  const std::vector<FrameComponent>* components;
};

}  // namespace

// The per-scan decoder, compiled twice: plain, and for CPUs with BMI2, whose pdep deposits a run of
// correction bits onto the nonzero coefficients' positions at once.
#define REFINE_NAMESPACE plain
#define REFINE_PDEP 0
#include "progressive-refine-scan.inc"
#undef REFINE_NAMESPACE
#undef REFINE_PDEP

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("bmi,bmi2,popcnt")
#define REFINE_NAMESPACE bmi2
#define REFINE_PDEP 1
#include "progressive-refine-scan.inc"
#undef REFINE_NAMESPACE
#undef REFINE_PDEP
#pragma GCC pop_options

namespace {
// pdep is microcoded, hundreds of cycles, on AMD before Zen 3. IMAGE_OPS_PLAIN_REFINE=1 forces the
// plain decoder (the tests run it that way too).
bool UseBmi2() {
  const char* plain = std::getenv("IMAGE_OPS_PLAIN_REFINE");
  if (plain != nullptr && plain[0] == '1') return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt") && !__builtin_cpu_is("znver1") &&
         !__builtin_cpu_is("znver2");
}
const bool kUseBmi2 = UseBmi2();
}  // namespace
#else
namespace {
const bool kUseBmi2 = false;
}  // namespace
#endif


bool Plan::Build(const uint8_t* data, size_t len) {
  data_ = data;
  components_.clear();
  refinements_.clear();
  firstScans_.clear();
  if (len < 4 || data[0] != 0xFF || data[1] != 0xD8) return false;
  // Nothing is copied before the frame header: most files are baseline and stop there, and all
  // that precedes SOF2 goes into the new stream unchanged, in one copy once SOF2 is seen.
  const auto copy = [&](size_t from, size_t to) {
    if (!components_.empty()) firstScans_.insert(firstScans_.end(), data + from, data + to);
  };

  HuffmanTable acTables[4];
  bool acDefined[4] = {false, false, false, false};
  int restartInterval = 0;
  // Per component and zigzag index: the lowest bit coded so far, -1 before its first scan.
  std::vector<std::array<int8_t, 64>> coded;
  size_t i = 2;
  for (;;) {
    if (i >= len || data[i] != 0xFF) return false;
    const size_t markerAt = i;
    while (i < len && data[i] == 0xFF) i++;
    if (i >= len) return false;
    const int marker = data[i++];
    if (marker == 0xD9) {
      copy(markerAt, i);
      return !components_.empty() && !refinements_.empty();
    }
    if (i + 2 > len) return false;
    const int segLen = ReadBE16(data + i);
    if (segLen < 2 || i + segLen > len) return false;
    const uint8_t* body = data + i + 2;
    const int bodyLen = segLen - 2;
    const size_t segEnd = i + segLen;

    if (marker == 0xC2) {
      if (!components_.empty() || bodyLen < 6 || body[0] != 8) return false;
      height_ = ReadBE16(body + 1);
      width_ = ReadBE16(body + 3);
      const int n = body[5];
      if (height_ == 0 || width_ == 0 || n < 1 || n > 4 || bodyLen != 6 + 3 * n) return false;
      for (int c = 0; c < n; c++) {
        FrameComponent fc;
        fc.id = body[6 + 3 * c];
        fc.h = body[7 + 3 * c] >> 4;
        fc.v = body[7 + 3 * c] & 15;
        if (fc.h < 1 || fc.h > 4 || fc.v < 1 || fc.v > 4) return false;
        components_.push_back(fc);
      }
      maxH_ = maxV_ = 1;
      for (const auto& fc : components_) {
        maxH_ = std::max(maxH_, fc.h);
        maxV_ = std::max(maxV_, fc.v);
      }
      for (auto& fc : components_) {
        fc.widthInBlocks = CeilDiv(width_ * fc.h, 8 * maxH_);
        fc.heightInBlocks = CeilDiv(height_ * fc.v, 8 * maxV_);
      }
      firstScans_.reserve(len);
      firstScans_.assign(data, data + segEnd);
      coded.assign(components_.size(), {});
      for (auto& c : coded) c.fill(-1);
    } else if ((marker >= 0xC0 && marker <= 0xCF) && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
      return false;  // baseline, lossless, hierarchical or arithmetic: not ours
    } else if (marker == 0xC4) {
      for (int p = 0; p < bodyLen;) {
        if (p + 17 > bodyLen) return false;
        const int cls = body[p] >> 4, slot = body[p] & 15;
        if (cls > 1 || slot > 3) return false;
        HuffmanTable t;
        for (int l = 1; l <= 16; l++) t.symbolCount += (t.counts[l] = body[p + l]);
        if (t.symbolCount > 256 || p + 17 + t.symbolCount > bodyLen) return false;
        std::memcpy(t.symbols, body + p + 17, t.symbolCount);
        if (cls == 1) {
          acTables[slot] = t;
          acDefined[slot] = true;
        }
        p += 17 + t.symbolCount;
      }
      copy(markerAt, segEnd);
    } else if (marker == 0xDD) {
      if (bodyLen != 2) return false;
      restartInterval = ReadBE16(body);
      copy(markerAt, segEnd);
    } else if (marker == 0xDA) {
      if (components_.empty() || bodyLen < 1) return false;
      RefinementScan scan;
      scan.componentCount = body[0];
      if (scan.componentCount < 1 || scan.componentCount > 4 || bodyLen != 4 + 2 * scan.componentCount) return false;
      int acSlot = 0;
      for (int c = 0; c < scan.componentCount; c++) {
        int found = -1;
        for (size_t f = 0; f < components_.size(); f++) {
          if (components_[f].id == body[1 + 2 * c]) found = static_cast<int>(f);
        }
        if (found < 0) return false;
        for (int d = 0; d < c; d++) {
          if (scan.components[d] == found) return false;
        }
        scan.components[c] = found;
        acSlot = body[2 + 2 * c] & 15;
      }
      const uint8_t* tail = body + 1 + 2 * scan.componentCount;
      scan.ss = tail[0];
      scan.se = tail[1];
      scan.ah = tail[2] >> 4;
      scan.al = tail[2] & 15;
      scan.restartInterval = restartInterval;
      if (scan.ss > scan.se || scan.se > 63 || scan.al > 13) return false;
      if (scan.ss == 0 ? scan.se != 0 : scan.componentCount != 1) return false;
      if (scan.ah != 0 && scan.al != scan.ah - 1) return false;
      for (int c = 0; c < scan.componentCount; c++) {
        auto& bits = coded[scan.components[c]];
        if (scan.ss > 0 && bits[0] < 0) return false;
        for (int k = scan.ss; k <= scan.se; k++) {
          if (scan.ah == 0 ? bits[k] >= 0 : bits[k] != scan.ah) return false;
          bits[k] = static_cast<int8_t>(scan.al);
        }
      }
      // The entropy-coded data runs to the next marker other than RSTn; RSTn cut it into segments.
      size_t begin = segEnd, j = segEnd;
      int restarts = 0;
      for (;;) {
        const void* ff = j < len ? std::memchr(data + j, 0xFF, len - j) : nullptr;
        if (ff == nullptr) return false;
        j = static_cast<const uint8_t*>(ff) - data;
        if (j + 1 >= len) return false;
        if (data[j + 1] == 0x00) {
          j += 2;
          continue;
        }
        size_t m = j;
        while (m < len && data[m] == 0xFF) m++;
        if (m >= len) return false;
        if (data[m] >= 0xD0 && data[m] <= 0xD7) {
          if (data[m] != 0xD0 + (restarts & 7)) return false;
          restarts++;
          scan.segments.emplace_back(begin, j);
          begin = j = m + 1;
          continue;
        }
        scan.segments.emplace_back(begin, j);
        break;
      }
      const FrameComponent& first = components_[scan.components[0]];
      const long mcus = scan.componentCount == 1
                            ? static_cast<long>(first.widthInBlocks) * first.heightInBlocks
                            : static_cast<long>(CeilDiv(width_, 8 * maxH_)) * CeilDiv(height_, 8 * maxV_);
      const long expected = restartInterval > 0 ? (mcus + restartInterval - 1) / restartInterval : 1;
      if (static_cast<long>(scan.segments.size()) != expected) return false;
      if (scan.ah == 0) {
        copy(markerAt, j);
      } else {
        if (scan.ss > 0) {
          if (!acDefined[acSlot]) return false;
          scan.ac = acTables[acSlot];
        }
        refinements_.push_back(std::move(scan));
      }
      i = j;
      continue;
    } else if (marker == 0xDB || marker == 0xFE || (marker >= 0xE0 && marker <= 0xEF)) {
      copy(markerAt, segEnd);
    } else {
      return false;  // DNL, RSTn or TEM out of place, or a reserved marker
    }
    i = segEnd;
  }
}

bool Plan::Apply(const ComponentBlocks* blocks, int count) const {
  if (count != static_cast<int>(components_.size())) return false;
  for (int c = 0; c < count; c++) {
    const FrameComponent& fc = components_[c];
    // Interleaved scans also touch the dummy blocks that pad each MCU.
    const int rows = CeilDiv(height_, 8 * maxV_) * fc.v, cols = CeilDiv(width_, 8 * maxH_) * fc.h;
    if (blocks[c].rowCount < rows || blocks[c].blocksPerRow < cols) return false;
  }
  const Frame frame{data_, width_, height_, maxH_, maxV_, &components_};
  for (const RefinementScan& scan : refinements_) {
    if (!(kUseBmi2 ? bmi2::DecodeScan : plain::DecodeScan)(frame, scan, blocks)) return false;
  }
  return true;
}

}  // namespace progressive
