// Stage 3's per-image work in one call off the JS thread: JPEG decode with DCT-domain downscaling
// (the system's libjpeg-turbo), resampling, crop or pad, JPEG encode. Why not only sharp: Debian's
// libjpeg-turbo decodes the same files in about half the CPU time of the decoder in sharp's bundled
// libvips, and each libvips pipeline costs about 1 ms of fixed overhead on a 256 px thumbnail;
// decoding is most of stage 3's CPU. Progressive JPEGs' refinement scans are decoded by our own
// code (progressive-refine.cc), which libjpeg spent two thirds of a progressive file's time on.
//
// The libjpeg calls live in plain C-style functions: its error handler longjmps, which must not
// cross C++ frames that own objects.
#include <napi.h>

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

extern "C" {
#include <jpeglib.h>
// For cinfo->coef->coef_arrays: the coefficient arrays of a buffered-image decode. Debian's
// libjpeg-dev installs it; without it, progressive files are decoded by libjpeg alone.
#if __has_include(<jpegint.h>)
#include <jpegint.h>
#define HAVE_JPEGINT 1
#else
#define HAVE_JPEGINT 0
#endif
}

#include "clip-preprocess.h"
#include "progressive-refine.h"

static_assert(sizeof(JCOEF) == sizeof(int16_t), "libjpeg built with 16-bit coefficients");

namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void OnError(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

// Corrupt or truncated data is a warning: like browsers (and libvips with fail_on=none) we keep
// what decoded; libjpeg-turbo fills a truncated tail with grey. Warnings are only counted.
void OnMessage(j_common_ptr cinfo, int level) {
  if (level < 0) cinfo->err->num_warnings++;
}

// libjpeg's standard error manager with our two handlers; the caller still sets err->jump.
jpeg_error_mgr* InstallErrorManager(ErrorManager* err) {
  jpeg_std_error(&err->pub);
  err->pub.error_exit = OnError;
  err->pub.emit_message = OnMessage;
  return &err->pub;
}

const char* ColorSpaceName(J_COLOR_SPACE cs) {
  switch (cs) {
    case JCS_GRAYSCALE: return "grayscale";
    case JCS_RGB: return "rgb";
    case JCS_YCbCr: return "ycbcr";
    case JCS_CMYK: return "cmyk";
    case JCS_YCCK: return "ycck";
    default: return "unknown";
  }
}

struct HeaderResult {
  int width = 0, height = 0, components = 0;
  const char* colorSpace = "unknown";
  bool progressive = false;
};

// The output pass of a started decompression, into pixels (output_width x output_height x 3).
void ReadRows(jpeg_decompress_struct* cinfo, uint8_t* pixels) {
  const size_t stride = static_cast<size_t>(cinfo->output_width) * 3;
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW rows[16];
    int n = 0;
    for (; n < 16 && cinfo->output_scanline + n < cinfo->output_height; n++) {
      rows[n] = pixels + stride * (cinfo->output_scanline + n);
    }
    jpeg_read_scanlines(cinfo, rows, static_cast<JDIMENSION>(n));
  }
}

// Reads the header into *header when given; then, when out is given, decodes to 3-channel RGB
// scaled by 1/denom (denom 1, 2, 4 or 8) into a malloc'd *out.
bool Decode(const uint8_t* data, size_t len, int denom, HeaderResult* header, uint8_t** out, int* width, int* height,
            char* message) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  // volatile: assigned after setjmp and read after a longjmp back to it.
  uint8_t* volatile pixels = nullptr;
  cinfo.err = InstallErrorManager(&err);
  jpeg_create_decompress(&cinfo);
  if (setjmp(err.jump)) {
    std::strcpy(message, err.message);
    std::free(pixels);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(len));
  jpeg_read_header(&cinfo, TRUE);
  if (header != nullptr) {
    header->width = static_cast<int>(cinfo.image_width);
    header->height = static_cast<int>(cinfo.image_height);
    header->components = cinfo.num_components;
    header->colorSpace = ColorSpaceName(cinfo.jpeg_color_space);
    header->progressive = jpeg_has_multiple_scans(&cinfo);
  }
  if (out == nullptr) {
    jpeg_destroy_decompress(&cinfo);
    return true;
  }
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned int>(denom);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  pixels = static_cast<uint8_t*>(std::malloc(static_cast<size_t>(cinfo.output_width) * 3 * cinfo.output_height));
  if (pixels == nullptr) {
    std::strcpy(message, "out of memory");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  ReadRows(&cinfo, pixels);
  *width = static_cast<int>(cinfo.output_width);
  *height = static_cast<int>(cinfo.output_height);
  // Skips any trailing garbage instead of failing on it.
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  *out = pixels;
  return true;
}

#if HAVE_JPEGINT
// A progressive JPEG decoded by libjpeg from its first scans only (buffered-image mode), with
// plan's refinement scans applied to the coefficients in between: the same coefficients, so the
// same pixels, as libjpeg decoding the whole file. False, with nothing allocated, whenever libjpeg
// warns or fails or the plan refuses the data: the caller then decodes the file with libjpeg alone.
bool DecodeWithOwnRefinement(const progressive::Plan& plan, int denom, uint8_t** out, int* width, int* height) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  // volatile: assigned after setjmp and read after a longjmp back to it.
  uint8_t* volatile pixels = nullptr;
  int16_t** volatile rows = nullptr;
  cinfo.err = InstallErrorManager(&err);
  jpeg_create_decompress(&cinfo);
  if (setjmp(err.jump)) {
    std::free(pixels);
    std::free(rows);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const std::vector<uint8_t>& stream = plan.firstScans();
  jpeg_mem_src(&cinfo, stream.data(), static_cast<unsigned long>(stream.size()));
  jpeg_read_header(&cinfo, TRUE);
  const std::vector<progressive::FrameComponent>& frame = plan.components();
  bool same = cinfo.progressive_mode && !cinfo.arith_code && cinfo.num_components == static_cast<int>(frame.size());
  for (int c = 0; same && c < cinfo.num_components; c++) {
    const jpeg_component_info& ci = cinfo.comp_info[c];
    same = static_cast<int>(ci.width_in_blocks) == frame[c].widthInBlocks &&
           static_cast<int>(ci.height_in_blocks) == frame[c].heightInBlocks && ci.h_samp_factor == frame[c].h &&
           ci.v_samp_factor == frame[c].v;
  }
  if (!same) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.buffered_image = TRUE;
  // Smoothing only ever applies to coefficients still missing bits; here none are, once refined.
  cinfo.do_block_smoothing = FALSE;
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned int>(denom);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  int status;
  do {
    status = jpeg_consume_input(&cinfo);
  } while (status != JPEG_REACHED_EOI && status != JPEG_SUSPENDED);
  jvirt_barray_ptr* arrays = cinfo.coef->coef_arrays;
  if (status != JPEG_REACHED_EOI || err.pub.num_warnings != 0 || arrays == nullptr) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  // libjpeg pads each component's arrays to whole MCUs (multiples of its sampling factors).
  progressive::ComponentBlocks blocks[MAX_COMPONENTS];
  size_t totalRows = 0;
  for (int c = 0; c < cinfo.num_components; c++) {
    const jpeg_component_info& ci = cinfo.comp_info[c];
    blocks[c].rowCount = static_cast<int>(jround_up(ci.height_in_blocks, ci.v_samp_factor));
    blocks[c].blocksPerRow = static_cast<int>(jround_up(ci.width_in_blocks, ci.h_samp_factor));
    totalRows += blocks[c].rowCount;
  }
  rows = static_cast<int16_t**>(std::malloc(totalRows * sizeof(int16_t*)));
  if (rows == nullptr) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  for (int c = 0, at = 0; c < cinfo.num_components; c++) {
    for (int r = 0; r < blocks[c].rowCount; r++) {
      JBLOCKARRAY a = (*cinfo.mem->access_virt_barray)(reinterpret_cast<j_common_ptr>(&cinfo), arrays[c], r, 1, TRUE);
      rows[at + r] = a[0][0];
    }
    blocks[c].rows = rows + at;
    at += blocks[c].rowCount;
  }
  const bool refined = plan.Apply(blocks, cinfo.num_components);
  std::free(rows);
  rows = nullptr;
  if (!refined) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_start_output(&cinfo, cinfo.input_scan_number);
  pixels = static_cast<uint8_t*>(std::malloc(static_cast<size_t>(cinfo.output_width) * 3 * cinfo.output_height));
  if (pixels == nullptr) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  ReadRows(&cinfo, pixels);
  *width = static_cast<int>(cinfo.output_width);
  *height = static_cast<int>(cinfo.output_height);
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  *out = pixels;
  return true;
}
#else
bool DecodeWithOwnRefinement(const progressive::Plan&, int, uint8_t**, int*, int*) { return false; }
#endif

// Decodes to RGB at 1/denom; progressive files go through DecodeWithOwnRefinement when
// ownRefinement is set and it accepts them (*refinedHere tells).
bool DecodeRgb(const uint8_t* data, size_t len, int denom, bool ownRefinement, uint8_t** out, int* width, int* height,
               bool* refinedHere, char* message) {
  *refinedHere = false;
  if (ownRefinement && HAVE_JPEGINT) {
    progressive::Plan plan;
    if (plan.Build(data, len) && DecodeWithOwnRefinement(plan, denom, out, width, height)) {
      *refinedHere = true;
      return true;
    }
  }
  return Decode(data, len, denom, nullptr, out, width, height, message);
}

// Baseline JPEG, 4:2:0, standard Huffman tables (libjpeg's defaults, as OpenCV's imencode).
bool Encode(const uint8_t* rgb, int width, int height, int channels, int quality, uint8_t** out, unsigned long* outLen,
            char* message) {
  jpeg_compress_struct cinfo;
  ErrorManager err;
  *out = nullptr;
  *outLen = 0;
  cinfo.err = InstallErrorManager(&err);
  jpeg_create_compress(&cinfo);
  if (setjmp(err.jump)) {
    std::strcpy(message, err.message);
    std::free(*out);
    *out = nullptr;
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_mem_dest(&cinfo, out, outLen);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(width) * channels;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb + stride * cinfo.next_scanline);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

// ---- Resampling: separable, weights per output pixel, float accumulation.

enum class Kernel { Nearest, Linear, Cubic, Area, Lanczos4, CvLanczos4 };

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

std::vector<uint8_t> ResampleCvLanczos4(const uint8_t* src, int w, int h, int c, int ow, int oh) {
  const CvTaps tx = CvLanczos4Taps(w, ow);
  const CvTaps ty = CvLanczos4Taps(h, oh);
  const size_t rowOut = static_cast<size_t>(ow) * c;
  const std::unique_ptr<int32_t[]> mid(new int32_t[static_cast<size_t>(h) * rowOut]);
  for (int y = 0; y < h; y++) {
    const uint8_t* row = src + static_cast<size_t>(y) * w * c;
    int32_t* dst = mid.get() + static_cast<size_t>(y) * rowOut;
    for (int x = 0; x < ow; x++) {
      const int16_t* k = tx.coef.data() + static_cast<size_t>(x) * 8;
      for (int ch = 0; ch < c; ch++) {
        int32_t acc = 0;
        for (int j = 0; j < 8; j++) {
          const int sx = std::clamp(tx.first[x] + j, 0, w - 1);
          acc += row[sx * c + ch] * k[j];
        }
        dst[x * c + ch] = acc;
      }
    }
  }
  std::vector<uint8_t> out(static_cast<size_t>(oh) * rowOut);
  for (int y = 0; y < oh; y++) {
    const int16_t* k = ty.coef.data() + static_cast<size_t>(y) * 8;
    const int32_t* rows[8];
    for (int j = 0; j < 8; j++) rows[j] = mid.get() + static_cast<size_t>(std::clamp(ty.first[y] + j, 0, h - 1)) * rowOut;
    uint8_t* dst = out.data() + static_cast<size_t>(y) * rowOut;
    for (size_t i = 0; i < rowOut; i++) {
      int64_t acc = 0;
      for (int j = 0; j < 8; j++) acc += static_cast<int64_t>(rows[j][i]) * k[j];
      const int64_t v = (acc + (1 << 21)) >> 22;
      dst[i] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
    }
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

// ---- One operation: [decode] -> resize -> crop or pad -> [encode].

struct Op {
  int denom = 1;
  int resizeWidth = 0, resizeHeight = 0;  // 0: keep the decoded size
  Kernel kernel = Kernel::Area;
  bool crop = false;
  int cropLeft = 0, cropTop = 0, cropWidth = 0, cropHeight = 0;
  bool pad = false;
  int padTop = 0, padBottom = 0, padLeft = 0, padRight = 0;
  uint8_t padValue = 255;
  int quality = 0;  // 0: return raw pixels; 1-100: return a JPEG
};

struct Image {
  std::vector<uint8_t> pixels;
  int width = 0, height = 0, channels = 0;
};

// Returns false with `message` set when the op does not fit the image.
bool Apply(const uint8_t* src, int w, int h, int c, const Op& op, Image* out, std::string* message) {
  std::vector<uint8_t> resized;
  const uint8_t* cur = src;
  int cw = w, ch = h;
  if (op.resizeWidth > 0 && op.resizeHeight > 0 && (op.resizeWidth != w || op.resizeHeight != h)) {
    resized = Resample(src, w, h, c, op.resizeWidth, op.resizeHeight, op.kernel);
    cur = resized.data();
    cw = op.resizeWidth;
    ch = op.resizeHeight;
  }
  if (op.crop) {
    if (op.cropLeft < 0 || op.cropTop < 0 || op.cropWidth < 1 || op.cropHeight < 1 || op.cropLeft + op.cropWidth > cw ||
        op.cropTop + op.cropHeight > ch) {
      *message = "crop outside the image";
      return false;
    }
    out->width = op.cropWidth;
    out->height = op.cropHeight;
    out->channels = c;
    out->pixels.resize(static_cast<size_t>(op.cropWidth) * op.cropHeight * c);
    for (int y = 0; y < op.cropHeight; y++) {
      std::memcpy(out->pixels.data() + static_cast<size_t>(y) * op.cropWidth * c,
                  cur + (static_cast<size_t>(op.cropTop + y) * cw + op.cropLeft) * c, static_cast<size_t>(op.cropWidth) * c);
    }
    return true;
  }
  if (op.pad) {
    if (op.padTop < 0 || op.padBottom < 0 || op.padLeft < 0 || op.padRight < 0) {
      *message = "negative padding";
      return false;
    }
    out->width = cw + op.padLeft + op.padRight;
    out->height = ch + op.padTop + op.padBottom;
    out->channels = c;
    out->pixels.assign(static_cast<size_t>(out->width) * out->height * c, op.padValue);
    for (int y = 0; y < ch; y++) {
      std::memcpy(out->pixels.data() + (static_cast<size_t>(op.padTop + y) * out->width + op.padLeft) * c,
                  cur + static_cast<size_t>(y) * cw * c, static_cast<size_t>(cw) * c);
    }
    return true;
  }
  out->width = cw;
  out->height = ch;
  out->channels = c;
  if (resized.empty()) out->pixels.assign(src, src + static_cast<size_t>(w) * h * c);
  else out->pixels = std::move(resized);
  return true;
}

// Hands a malloc'd block to JS without a copy, telling V8 its size so GC keeps up.
Napi::Buffer<uint8_t> AdoptBuffer(Napi::Env env, uint8_t* data, size_t len) {
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(len));
  return Napi::Buffer<uint8_t>::New(env, data, len, [len](Napi::Env e, uint8_t* p) {
    std::free(p);
    Napi::MemoryManagement::AdjustExternalMemory(e, -static_cast<int64_t>(len));
  });
}

class TransformWorker : public Napi::AsyncWorker {
 public:
  // jpeg: input is a JPEG file; otherwise raw pixels of width x height x channels.
  TransformWorker(Napi::Env env, Napi::Buffer<uint8_t> input, bool jpeg, int width, int height, int channels, const Op& op)
      : Napi::AsyncWorker(env, "image-ops"),
        deferred_(Napi::Promise::Deferred::New(env)),
        input_(Napi::Persistent(input)),
        data_(input.Data()),
        len_(input.Length()),
        jpeg_(jpeg),
        width_(width),
        height_(height),
        channels_(channels),
        op_(op) {}
  ~TransformWorker() override {
    std::free(decoded_);
    std::free(encoded_);
  }
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    char message[JMSG_LENGTH_MAX] = {0};
    const uint8_t* src = data_;
    int w = width_, h = height_, c = channels_;
    if (jpeg_) {
      bool refinedHere;
      if (!DecodeRgb(data_, len_, op_.denom, true, &decoded_, &w, &h, &refinedHere, message)) return SetError(message);
      src = decoded_;
      c = 3;
    }
    std::string why;
    if (!Apply(src, w, h, c, op_, &result_, &why)) return SetError(why);
    std::free(decoded_);
    decoded_ = nullptr;
    if (op_.quality > 0) {
      if (!Encode(result_.pixels.data(), result_.width, result_.height, result_.channels, op_.quality, &encoded_,
                  &encodedLen_, message)) {
        return SetError(message);
      }
      result_.pixels = std::vector<uint8_t>();
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    if (encoded_ != nullptr) {
      o.Set("data", AdoptBuffer(env, encoded_, encodedLen_));
      encoded_ = nullptr;
    } else {
      o.Set("data", Napi::Buffer<uint8_t>::Copy(env, result_.pixels.data(), result_.pixels.size()));
    }
    o.Set("width", result_.width);
    o.Set("height", result_.height);
    o.Set("channels", result_.channels);
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Buffer<uint8_t>> input_;
  const uint8_t* data_;
  size_t len_;
  bool jpeg_;
  int width_, height_, channels_;
  Op op_;
  uint8_t* decoded_ = nullptr;
  uint8_t* encoded_ = nullptr;
  unsigned long encodedLen_ = 0;
  Image result_;
};

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsBuffer()) throw Napi::TypeError::New(info.Env(), "expected a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

int IntArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "expected a number");
  return info[i].As<Napi::Number>().Int32Value();
}

int IntField(const Napi::Object& o, const char* key, int fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : fallback;
}

// An optional nested object of numbers (crop, pad): false when absent, missing fields read as 0.
bool IntFields(const Napi::Object& o, const char* key, std::initializer_list<std::pair<const char*, int*>> fields) {
  Napi::Value v = o.Get(key);
  if (!v.IsObject()) return false;
  Napi::Object inner = v.As<Napi::Object>();
  for (const auto& [name, out] : fields) *out = IntField(inner, name, 0);
  return true;
}

Op ParseOp(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) throw Napi::TypeError::New(env, "expected an op object");
  Napi::Object o = v.As<Napi::Object>();
  Op op;
  op.denom = IntField(o, "denom", 1);
  if (op.denom != 1 && op.denom != 2 && op.denom != 4 && op.denom != 8) throw Napi::RangeError::New(env, "denom must be 1, 2, 4 or 8");
  op.resizeWidth = IntField(o, "resizeWidth", 0);
  op.resizeHeight = IntField(o, "resizeHeight", 0);
  Napi::Value kernel = o.Get("kernel");
  if (kernel.IsString() && !ParseKernel(kernel.As<Napi::String>().Utf8Value(), &op.kernel)) {
    throw Napi::RangeError::New(env, "kernel must be nearest, linear, cubic, area, lanczos4 or opencv-lanczos4");
  }
  op.crop = IntFields(o, "crop", {{"left", &op.cropLeft}, {"top", &op.cropTop}, {"width", &op.cropWidth}, {"height", &op.cropHeight}});
  op.pad = IntFields(o, "pad", {{"top", &op.padTop}, {"bottom", &op.padBottom}, {"left", &op.padLeft}, {"right", &op.padRight}});
  op.padValue = static_cast<uint8_t>(std::clamp(IntField(o, "padValue", 255), 0, 255));
  op.quality = IntField(o, "quality", 0);
  if (op.quality < 0 || op.quality > 100) throw Napi::RangeError::New(env, "quality must be 1-100 (0: raw output)");
  const int maxSide = 65500;
  if (op.resizeWidth < 0 || op.resizeHeight < 0 || op.resizeWidth > maxSide || op.resizeHeight > maxSide) {
    throw Napi::RangeError::New(env, "resize size out of range");
  }
  return op;
}

// readHeader(buf) -> { width, height, components, colorSpace, progressive }; throws on a bad header.
Napi::Value ReadHeaderJs(const Napi::CallbackInfo& info) {
  Napi::Buffer<uint8_t> buf = BufferArg(info, 0);
  HeaderResult h;
  char message[JMSG_LENGTH_MAX] = {0};
  if (!Decode(buf.Data(), buf.Length(), 1, &h, nullptr, nullptr, nullptr, message)) throw Napi::Error::New(info.Env(), message);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("width", h.width);
  o.Set("height", h.height);
  o.Set("components", h.components);
  o.Set("colorSpace", h.colorSpace);
  o.Set("progressive", h.progressive);
  return o;
}

// decodeJpeg(jpegBytes, denom, ownRefinement) -> { data, width, height, refinedHere }, synchronous: lets
// tests compare the two progressive decode paths.
Napi::Value DecodeJpegJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> buf = BufferArg(info, 0);
  const int denom = IntArg(info, 1);
  if (denom != 1 && denom != 2 && denom != 4 && denom != 8) throw Napi::RangeError::New(env, "denom must be 1, 2, 4 or 8");
  uint8_t* pixels = nullptr;
  int w = 0, h = 0;
  bool refinedHere = false;
  char message[JMSG_LENGTH_MAX] = {0};
  if (!DecodeRgb(buf.Data(), buf.Length(), denom, info[2].ToBoolean(), &pixels, &w, &h, &refinedHere, message)) {
    throw Napi::Error::New(env, message);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", AdoptBuffer(env, pixels, static_cast<size_t>(w) * h * 3));
  o.Set("width", w);
  o.Set("height", h);
  o.Set("refinedHere", refinedHere);
  return o;
}

// transformJpeg(jpegBytes, op) -> Promise<{ data, width, height, channels }>
Napi::Value TransformJpegJs(const Napi::CallbackInfo& info) {
  Napi::Buffer<uint8_t> buf = BufferArg(info, 0);
  Op op = ParseOp(info.Env(), info[1]);
  auto* w = new TransformWorker(info.Env(), buf, true, 0, 0, 3, op);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// transformRaw(pixels, width, height, channels, op) -> Promise<{ data, width, height, channels }>
Napi::Value TransformRawJs(const Napi::CallbackInfo& info) {
  Napi::Buffer<uint8_t> buf = BufferArg(info, 0);
  const int width = IntArg(info, 1), height = IntArg(info, 2), channels = IntArg(info, 3);
  if (width < 1 || height < 1 || channels < 1 || channels > 4) throw Napi::RangeError::New(info.Env(), "bad raw image size");
  if (buf.Length() < static_cast<size_t>(width) * height * channels) throw Napi::RangeError::New(info.Env(), "buffer too small");
  Op op = ParseOp(info.Env(), info[4]);
  op.denom = 1;
  if (op.quality > 0 && channels != 1 && channels != 3) throw Napi::RangeError::New(info.Env(), "JPEG output needs 1 or 3 channels");
  auto* w = new TransformWorker(info.Env(), buf, false, width, height, channels, op);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// glibc's mmap threshold rises to the largest block freed, so once a multi-MB decode buffer has
// been freed, later ones come from the heap arenas and their freed pages stay mapped: a worker held
// 55-75 MB of free arena memory after each shard. malloc_trim(0) hands those pages back.
Napi::Value TrimHeapJs(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("readHeader", Napi::Function::New(env, ReadHeaderJs));
  exports.Set("decodeJpeg", Napi::Function::New(env, DecodeJpegJs));
  exports.Set("transformJpeg", Napi::Function::New(env, TransformJpegJs));
  exports.Set("transformRaw", Napi::Function::New(env, TransformRawJs));
  exports.Set("trimHeap", Napi::Function::New(env, TrimHeapJs));
  exports.Set("libjpegVersion", JPEG_LIB_VERSION);
  clip_preprocess::Register(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(image_ops, Init)
