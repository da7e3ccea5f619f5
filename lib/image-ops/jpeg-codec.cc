// JPEG decode and encode on the system's libjpeg-turbo (see jpeg-codec.h). Why not only sharp:
// Debian's libjpeg-turbo decodes the same files in about half the CPU time of the decoder in sharp's
// bundled libvips, and decoding is most of stage 3's CPU. Progressive JPEGs' refinement scans are
// decoded by our own code (progressive-refine.cc), which libjpeg spent two thirds of a progressive
// file's time on.
//
// The libjpeg calls live in plain C-style functions: its error handler longjmps, which must not
// cross C++ frames that own objects.
#include "jpeg-codec.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

#include "progressive-refine.h"

static_assert(sizeof(JCOEF) == sizeof(int16_t), "libjpeg built with 16-bit coefficients");
static_assert(JMSG_LENGTH_MAX <= imageops::kMessageSize, "libjpeg messages fit the callers' buffers");

namespace imageops {
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

bool IsCmyk(J_COLOR_SPACE cs) { return cs == JCS_CMYK || cs == JCS_YCCK; }

// The output pass of a CMYK decompression (out_color_space JCS_CMYK), into RGB pixels. libjpeg-turbo
// has no CMYK -> RGB conversion; this is OpenCV's (so img2dataset's): inverted (Adobe) CMYK as
// libjpeg returns it, R = K - (255 - C) * K / 256 in integers, no colour management. scratch holds
// 16 rows of CMYK (output_width * 64 bytes), owned by the caller since libjpeg may longjmp out.
void ReadRowsCmyk(jpeg_decompress_struct* cinfo, uint8_t* pixels, uint8_t* scratch) {
  const size_t width = cinfo->output_width;
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW rows[16];
    for (int n = 0; n < 16; n++) rows[n] = scratch + width * 4 * n;
    const JDIMENSION first = cinfo->output_scanline;
    const JDIMENSION got = jpeg_read_scanlines(cinfo, rows, 16);
    for (JDIMENSION r = 0; r < got; r++) {
      const uint8_t* in = rows[r];
      uint8_t* out = pixels + width * 3 * (first + r);
      for (size_t x = 0; x < width; x++, in += 4, out += 3) {
        const int k = in[3];
        out[0] = static_cast<uint8_t>(k - (((255 - in[0]) * k) >> 8));
        out[1] = static_cast<uint8_t>(k - (((255 - in[1]) * k) >> 8));
        out[2] = static_cast<uint8_t>(k - (((255 - in[2]) * k) >> 8));
      }
    }
    if (got == 0) break;
  }
}

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

}  // namespace

// Reads the header into *header when given; then, when out is given, decodes to 3-channel RGB
// scaled by 1/denom (denom 1, 2, 4 or 8) into a malloc'd *out.
bool Decode(const uint8_t* data, size_t len, int denom, HeaderResult* header, uint8_t** out, int* width, int* height,
            char* message) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  // volatile: assigned after setjmp and read after a longjmp back to it.
  uint8_t* volatile pixels = nullptr;
  uint8_t* volatile cmykRows = nullptr;
  cinfo.err = InstallErrorManager(&err);
  jpeg_create_decompress(&cinfo);
  if (setjmp(err.jump)) {
    std::strcpy(message, err.message);
    std::free(pixels);
    std::free(cmykRows);
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
  const bool cmyk = IsCmyk(cinfo.jpeg_color_space);
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  pixels = static_cast<uint8_t*>(std::malloc(static_cast<size_t>(cinfo.output_width) * 3 * cinfo.output_height));
  if (cmyk) cmykRows = static_cast<uint8_t*>(std::malloc(static_cast<size_t>(cinfo.output_width) * 4 * 16));
  if (pixels == nullptr || (cmyk && cmykRows == nullptr)) {
    std::strcpy(message, "out of memory");
    std::free(pixels);
    std::free(cmykRows);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  if (cmyk) {
    ReadRowsCmyk(&cinfo, pixels, cmykRows);
    std::free(cmykRows);
    cmykRows = nullptr;
  } else {
    ReadRows(&cinfo, pixels);
  }
  *width = static_cast<int>(cinfo.output_width);
  *height = static_cast<int>(cinfo.output_height);
  // Skips any trailing garbage instead of failing on it.
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  *out = pixels;
  return true;
}

namespace {

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
  bool same = cinfo.progressive_mode && !cinfo.arith_code && cinfo.num_components == static_cast<int>(frame.size()) &&
              !IsCmyk(cinfo.jpeg_color_space);
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


}  // namespace

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
int LibjpegVersion() { return JPEG_LIB_VERSION; }

}  // namespace imageops
