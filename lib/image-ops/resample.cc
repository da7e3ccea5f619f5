// Resampling (see resample.h): weights per output pixel computed once per axis, rows then columns,
// float accumulation; the exact engine's OpenCV kernels step for step.
#include "resample.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <memory>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace imageops {

bool ParseKernel(const std::string& name, Kernel* k) {
  if (name == "nearest") *k = Kernel::Nearest;
  else if (name == "opencv-lanczos4") *k = Kernel::CvLanczos4;
  else if (name == "linear") *k = Kernel::Linear;
  else if (name == "cubic") *k = Kernel::Cubic;
  else if (name == "area") *k = Kernel::Area;
  else if (name == "lanczos4") *k = Kernel::Lanczos4;
  else return false;
  return true;
}

double Sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}

namespace {

double KernelSupport(Kernel k) {
  switch (k) {
    case Kernel::Cubic: return 2.0;
    case Kernel::Lanczos4: return 4.0;
    default: return 1.0;
  }
}

double KernelAt(Kernel k, double t) {
  t = std::fabs(t);
  switch (k) {
    case Kernel::Cubic: {
      // Keys' cubic with a = -0.75, OpenCV's INTER_CUBIC.
      const double a = -0.75;
      if (t < 1.0) return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
      if (t < 2.0) return ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a;
      return 0.0;
    }
    case Kernel::Lanczos4: return t < 4.0 ? Sinc(t) * Sinc(t / 4.0) : 0.0;
    default: return t < 1.0 ? 1.0 - t : 0.0;
  }
}

// For each output coordinate: the first input index and `taps` weights (zero-padded).
struct Taps {
  int taps = 0;
  std::vector<int> first;
  std::vector<float> weights;
  // Taps up to the last non-zero weight inside the image: the loops skip the rest.
  std::vector<int> count;
  void Trim(int in) {
    count.resize(first.size());
    for (size_t x = 0; x < first.size(); x++) {
      int n = std::min(taps, in - first[x]);
      while (n > 1 && weights[x * taps + n - 1] == 0.0f) n--;
      count[x] = n;
    }
  }
};

Taps ComputeTapsUntrimmed(int in, int out, Kernel kernel) {
  Taps t;
  const double scale = static_cast<double>(in) / out;
  t.first.resize(out);
  if (kernel == Kernel::Nearest) {
    // OpenCV's INTER_NEAREST: floor(x * scale).
    t.taps = 1;
    t.weights.assign(out, 1.0f);
    for (int x = 0; x < out; x++) t.first[x] = std::min(static_cast<int>(std::floor(x * scale)), in - 1);
    return t;
  }
  if (kernel == Kernel::Area && scale >= 1.0) {
    // OpenCV's INTER_AREA when shrinking: each output pixel is the exact area average of its footprint.
    t.taps = static_cast<int>(std::ceil(scale)) + 1;
    t.weights.assign(static_cast<size_t>(out) * t.taps, 0.0f);
    for (int x = 0; x < out; x++) {
      const double a = x * scale, b = std::min((x + 1) * scale, static_cast<double>(in));
      const int i0 = static_cast<int>(std::floor(a));
      t.first[x] = i0;
      for (int i = i0, k = 0; i < in && i < b && k < t.taps; i++, k++) {
        const double overlap = std::min(i + 1.0, b) - std::max(static_cast<double>(i), a);
        t.weights[static_cast<size_t>(x) * t.taps + k] = static_cast<float>(overlap / (b - a));
      }
    }
    return t;
  }
  // Enlarging with "area" interpolates linearly, as OpenCV does.
  const Kernel k = kernel == Kernel::Area ? Kernel::Linear : kernel;
  // Shrinking stretches the kernel over the footprint so the result is antialiased.
  const double stretch = std::max(scale, 1.0);
  const double support = KernelSupport(k) * stretch;
  t.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.weights.assign(static_cast<size_t>(out) * t.taps, 0.0f);
  std::vector<double> w(t.taps);
  for (int x = 0; x < out; x++) {
    const double center = (x + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(std::floor(center - support)));
    const int hi = std::min(in, static_cast<int>(std::ceil(center + support)));
    double sum = 0.0;
    int n = 0;
    for (int i = lo; i < hi && n < t.taps; i++, n++) {
      w[n] = KernelAt(k, (i + 0.5 - center) / stretch);
      sum += w[n];
    }
    t.first[x] = lo;
    if (sum == 0.0) {
      // Degenerate footprint: take the nearest pixel.
      t.first[x] = std::min(std::max(static_cast<int>(center), 0), in - 1);
      t.weights[static_cast<size_t>(x) * t.taps] = 1.0f;
      continue;
    }
    for (int j = 0; j < n; j++) t.weights[static_cast<size_t>(x) * t.taps + j] = static_cast<float>(w[j] / sum);
  }
  return t;
}

Taps ComputeTaps(int in, int out, Kernel kernel) {
  Taps t = ComputeTapsUntrimmed(in, out, kernel);
  t.Trim(in);
  return t;
}

// Round half to even, as OpenCV's saturate_cast does.
inline uint8_t ClampByte(float v) {
  const long r = std::lrintf(v);
  return static_cast<uint8_t>(r < 0 ? 0 : r > 255 ? 255 : r);
}

// ClampByte over a row, 16 at a time where SSE2 is there (cvtps rounds half to even too).
void ClampBytes(const float* in, uint8_t* out, size_t n) {
  size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm_cvtps_epi32(_mm_loadu_ps(in + i)), b = _mm_cvtps_epi32(_mm_loadu_ps(in + i + 4));
    const __m128i c = _mm_cvtps_epi32(_mm_loadu_ps(in + i + 8)), d = _mm_cvtps_epi32(_mm_loadu_ps(in + i + 12));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, d)));
  }
#endif
  for (; i < n; i++) out[i] = ClampByte(in[i]);
}

// OpenCV's INTER_LANCZOS4 on 8-bit pixels, step for step, so the exact engine enlarges as
// img2dataset does: 8 taps around (x + 0.5) * scale - 0.5, float coefficients normalised to sum 1,
// rounded to 11-bit fixed point; edge pixels repeat; rows then columns in integers, one rounding.
void CvLanczos4Coefficients(float x, float* coeffs) {
  if (x < FLT_EPSILON) {
    for (int i = 0; i < 8; i++) coeffs[i] = 0.0f;
    coeffs[3] = 1.0f;
    return;
  }
  // sin(pi t) sin(pi t / 4) / (pi t / 4)^2 up to a constant, via the angle-sum identity on
  // y0 = -(x + 3) pi / 4: sin(y0 + i pi / 4) with cos/sin of i pi / 4 taken from this table.
  const double r = 0.70710678118654752440084436210485;
  const double table[8][2] = {{1, 0}, {-r, -r}, {0, 1}, {r, -r}, {-1, 0}, {r, r}, {0, -1}, {-r, r}};
  const double y0 = -(x + 3) * M_PI * 0.25;
  const double s0 = std::sin(y0), c0 = std::cos(y0);
  float sum = 0.0f;
  for (int i = 0; i < 8; i++) {
    const double y = -(x + 3 - i) * M_PI * 0.25;
    coeffs[i] = static_cast<float>((table[i][0] * s0 + table[i][1] * c0) / (y * y));
    sum += coeffs[i];
  }
  sum = 1.0f / sum;
  for (int i = 0; i < 8; i++) coeffs[i] *= sum;
}

struct CvTaps {
  std::vector<int> first;     // source index of tap 0 (may be negative)
  std::vector<int16_t> coef;  // 8 per output pixel, scale 2048
};

CvTaps CvLanczos4Taps(int in, int out) {
  CvTaps t;
  t.first.resize(out);
  t.coef.resize(static_cast<size_t>(out) * 8);
  const double scale = 1.0 / (static_cast<double>(out) / in);
  float c[8];
  for (int x = 0; x < out; x++) {
    float f = static_cast<float>((x + 0.5) * scale - 0.5);
    const int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    CvLanczos4Coefficients(f, c);
    t.first[x] = s - 3;
    for (int k = 0; k < 8; k++) {
      const long v = std::lrintf(c[k] * 2048.0f);
      t.coef[static_cast<size_t>(x) * 8 + k] = static_cast<int16_t>(std::clamp(v, -32768L, 32767L));
    }
  }
  return t;
}

// One row of the horizontal pass: 8 taps per output pixel; taps past an edge repeat the edge pixel.
void CvLanczos4Row(const uint8_t* row, int w, int c, const CvTaps& tx, int ow, int32_t* dst) {
  for (int x = 0; x < ow; x++) {
    const int16_t* k = tx.coef.data() + static_cast<size_t>(x) * 8;
    const int first = tx.first[x];
    if (c == 3 && first >= 0 && first + 7 < w) {
      // Interior, RGB: no clamping, the three channels side by side.
      const uint8_t* p = row + first * 3;
      int32_t a0 = 0, a1 = 0, a2 = 0;
      for (int j = 0; j < 8; j++, p += 3) {
        a0 += p[0] * k[j];
        a1 += p[1] * k[j];
        a2 += p[2] * k[j];
      }
      dst[x * 3] = a0;
      dst[x * 3 + 1] = a1;
      dst[x * 3 + 2] = a2;
      continue;
    }
    for (int ch = 0; ch < c; ch++) {
      int32_t acc = 0;
      for (int j = 0; j < 8; j++) {
        const int sx = std::clamp(first + j, 0, w - 1);
        acc += row[sx * c + ch] * k[j];
      }
      dst[x * c + ch] = acc;
    }
  }
}

// One row of the vertical pass, in 32-bit integers as OpenCV sums them (unsigned, so a sum past
// 2^31 wraps as OpenCV's does rather than being undefined), then >> 22 with rounding and saturation.
// Built twice, for AVX2 and for any x86-64, the right one picked at load time: the loop is written
// so the compiler vectorises it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void CvLanczos4Column(const int32_t* const* rows, const int16_t* k, size_t n, uint8_t* dst) {
  const uint32_t k0 = static_cast<uint32_t>(k[0]), k1 = static_cast<uint32_t>(k[1]), k2 = static_cast<uint32_t>(k[2]),
                 k3 = static_cast<uint32_t>(k[3]), k4 = static_cast<uint32_t>(k[4]), k5 = static_cast<uint32_t>(k[5]),
                 k6 = static_cast<uint32_t>(k[6]), k7 = static_cast<uint32_t>(k[7]);
  const int32_t *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5], *r6 = rows[6],
                *r7 = rows[7];
  for (size_t i = 0; i < n; i++) {
    const uint32_t acc = static_cast<uint32_t>(r0[i]) * k0 + static_cast<uint32_t>(r1[i]) * k1 + static_cast<uint32_t>(r2[i]) * k2 +
                         static_cast<uint32_t>(r3[i]) * k3 + static_cast<uint32_t>(r4[i]) * k4 + static_cast<uint32_t>(r5[i]) * k5 +
                         static_cast<uint32_t>(r6[i]) * k6 + static_cast<uint32_t>(r7[i]) * k7 + (1u << 21);
    const int32_t v = static_cast<int32_t>(acc) >> 22;
    dst[i] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
  }
}

std::vector<uint8_t> ResampleCvLanczos4(const uint8_t* src, int w, int h, int c, int ow, int oh) {
  const CvTaps tx = CvLanczos4Taps(w, ow);
  const CvTaps ty = CvLanczos4Taps(h, oh);
  const size_t rowOut = static_cast<size_t>(ow) * c;
  const std::unique_ptr<int32_t[]> mid(new int32_t[static_cast<size_t>(h) * rowOut]);
  for (int y = 0; y < h; y++) CvLanczos4Row(src + static_cast<size_t>(y) * w * c, w, c, tx, ow, mid.get() + static_cast<size_t>(y) * rowOut);
  std::vector<uint8_t> out(static_cast<size_t>(oh) * rowOut);
  for (int y = 0; y < oh; y++) {
    const int32_t* rows[8];
    for (int j = 0; j < 8; j++) rows[j] = mid.get() + static_cast<size_t>(std::clamp(ty.first[y] + j, 0, h - 1)) * rowOut;
    CvLanczos4Column(rows, ty.coef.data() + static_cast<size_t>(y) * 8, rowOut, out.data() + static_cast<size_t>(y) * rowOut);
  }
  return out;
}

// OpenCV's INTER_AREA takes a SIMD path for an exact 2x2 shrink that rounds halves up, not to even.
std::vector<uint8_t> ShrinkArea2x2(const uint8_t* src, int w, int c, int ow, int oh) {
  std::vector<uint8_t> out(static_cast<size_t>(ow) * oh * c);
  const size_t stride = static_cast<size_t>(w) * c;
  for (int y = 0; y < oh; y++) {
    const uint8_t* r0 = src + static_cast<size_t>(2 * y) * stride;
    const uint8_t* r1 = r0 + stride;
    uint8_t* dst = out.data() + static_cast<size_t>(y) * ow * c;
    for (int x = 0; x < ow; x++) {
      for (int ch = 0; ch < c; ch++) {
        const int a = (2 * x) * c + ch, b = a + c;
        dst[x * c + ch] = static_cast<uint8_t>((r0[a] + r0[b] + r1[a] + r1[b] + 2) >> 2);
      }
    }
  }
  return out;
}

}  // namespace

// Resizes interleaved 8-bit pixels: rows first (into floats), then columns.
std::vector<uint8_t> Resample(const uint8_t* src, int w, int h, int c, int ow, int oh, Kernel kernel) {
  if (kernel == Kernel::CvLanczos4) return ResampleCvLanczos4(src, w, h, c, ow, oh);
  if (kernel == Kernel::Area && w == 2 * ow && h == 2 * oh) return ShrinkArea2x2(src, w, c, ow, oh);
  const Taps tx = ComputeTaps(w, ow, kernel);
  const Taps ty = ComputeTaps(h, oh, kernel);
  const size_t rowOut = static_cast<size_t>(ow) * c;
  // Every element of mid is written before it is read: no zero-fill (about 2% of a worker's CPU under perf).
  // One float of slack after mid and rowf: the SSE path below reads and writes 4 floats per RGB pixel.
  const std::unique_ptr<float[]> mid(new float[static_cast<size_t>(h) * rowOut + 1]);
  std::vector<float> rowf(static_cast<size_t>(w) * c + 1, 0.0f);
  for (int y = 0; y < h; y++) {
    const uint8_t* row = src + static_cast<size_t>(y) * w * c;
    for (size_t i = 0; i < static_cast<size_t>(w) * c; i++) rowf[i] = row[i];
    float* dst = mid.get() + static_cast<size_t>(y) * rowOut;
    for (int x = 0; x < ow; x++) {
      const float* wt = tx.weights.data() + static_cast<size_t>(x) * tx.taps;
      const float* p = rowf.data() + static_cast<size_t>(tx.first[x]) * c;
      const int n = tx.count[x];
#if defined(__SSE2__)
      // R, G, B (and a fourth lane that is thrown away) in one register: per channel the same
      // multiplies and adds in the same order as the scalar loop, so the same floats. The fourth
      // lane's store lands on the next pixel's R, written after it (or on the slack float).
      if (c == 3) {
        __m128 acc = _mm_setzero_ps();
        for (int k = 0; k < n; k++, p += 3) acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(wt[k]), _mm_loadu_ps(p)));
        _mm_storeu_ps(dst + x * 3, acc);
        continue;
      }
#endif
      // Channels side by side in one pass over the taps (the sums keep the same order per channel).
      if (c == 3) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
        for (int k = 0; k < n; k++, p += 3) {
          a0 += wt[k] * p[0];
          a1 += wt[k] * p[1];
          a2 += wt[k] * p[2];
        }
        dst[x * 3] = a0;
        dst[x * 3 + 1] = a1;
        dst[x * 3 + 2] = a2;
        continue;
      }
      for (int ch = 0; ch < c; ch++) {
        float acc = 0.0f;
        for (int k = 0; k < n; k++) acc += wt[k] * p[k * c + ch];
        dst[x * c + ch] = acc;
      }
    }
  }
  std::vector<uint8_t> out(static_cast<size_t>(oh) * rowOut);
  std::vector<float> acc(rowOut);
  for (int y = 0; y < oh; y++) {
    const float* wt = ty.weights.data() + static_cast<size_t>(y) * ty.taps;
    const int first = ty.first[y];
    const int n = ty.count[y];
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int k = 0; k < n; k++) {
      const float wk = wt[k];
      if (wk == 0.0f) continue;
      const float* in = mid.get() + static_cast<size_t>(first + k) * rowOut;
      for (size_t i = 0; i < rowOut; i++) acc[i] += wk * in[i];
    }
    uint8_t* dst = out.data() + static_cast<size_t>(y) * rowOut;
    ClampBytes(acc.data(), dst, rowOut);
  }
  return out;
}
}  // namespace imageops
