// CLIP's image preprocessing, as the Hugging Face CLIPImageProcessor does it with Pillow, in one
// call off the JS thread: decode (JPEG here, other formats arrive as raw pixels), RGB, resize with
// PIL's resampling filters (same coefficients, same 22-bit fixed point, same two passes and
// rounding, so bicubic downscaling is antialiased exactly as PIL's), centre crop with HF's offsets
// ((H - crop) // 2, zero padding where the image is smaller), rescale, normalise, written as
// float32 CHW straight into the caller's batch tensor. Only the cropped window is resampled: every
// output pixel depends only on its own taps, so the values are those of a full resize then a crop.
#include "clip-preprocess.h"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "jpeg-codec.h"
#include "resample.h"

namespace clip_preprocess {
namespace {

// ---- JPEG to RGB: jpeg-codec.cc's decoder at full size (libjpeg's defaults, as PIL decodes:
// islow DCT, fancy upsampling), so the pixels are PIL's.

// ---- PIL's resampling filters (Pillow's Resample.c, by value: resample ids as in preprocessor_config.json).

enum Filter { kNearest = 0, kLanczos = 1, kBilinear = 2, kBicubic = 3, kBox = 4, kHamming = 5 };

double FilterSupport(int f) {
  switch (f) {
    case kBox: return 0.5;
    case kBilinear: case kHamming: return 1.0;
    case kBicubic: return 2.0;
    case kLanczos: return 3.0;
    default: return 0.0;
  }
}

double FilterAt(int f, double x) {
  switch (f) {
    case kBox: return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    case kBilinear: x = std::fabs(x); return x < 1.0 ? 1.0 - x : 0.0;
    case kHamming: {
      x = std::fabs(x);
      if (x == 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      x *= M_PI;
      return std::sin(x) / x * (0.54 + 0.46 * std::cos(x));
    }
    case kBicubic: {
      const double a = -0.5;
      x = std::fabs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
      if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
      return 0.0;
    }
    case kLanczos: return (x > -3.0 && x < 3.0) ? imageops::Sinc(x) * imageops::Sinc(x / 3.0) : 0.0;
    default: return 0.0;
  }
}

constexpr int kPrecisionBits = 32 - 8 - 2;

// Per output index: first input index, tap count, and ksize fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count, weights;
};

Coeffs Precompute(int inSize, int outSize, int filter) {
  Coeffs c;
  c.first.resize(outSize);
  c.count.resize(outSize);
  const double scale = static_cast<double>(inSize) / outSize;
  if (filter == kNearest) {
    // PIL resizes with NEAREST through its affine scaler: the source position starts at scale / 2
    // and is accumulated by adding scale per pixel (the float sum, not (x + 0.5) * scale).
    c.ksize = 1;
    c.weights.assign(outSize, 1 << kPrecisionBits);
    double pos = scale * 0.5;
    for (int x = 0; x < outSize; x++, pos += scale) {
      const int i = static_cast<int>(pos);
      c.first[x] = i < inSize ? i : inSize - 1;
      c.count[x] = 1;
    }
    return c;
  }
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = FilterSupport(filter) * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.weights.assign(static_cast<size_t>(outSize) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < outSize; xx++) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; x++) {
      k[x] = FilterAt(filter, (x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (int x = 0; x < xmax; x++) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      // PIL's normalize_coeffs_8bpc: round half away from zero.
      c.weights[static_cast<size_t>(xx) * c.ksize + x] =
          w < 0 ? static_cast<int>(-0.5 + w * (1 << kPrecisionBits)) : static_cast<int>(0.5 + w * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t Clip8(int v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

struct Spec {
  bool resize = true;
  // shortestEdge > 0: shorter side to it, longer side int(edge * long / short); else exact size.
  int shortestEdge = 0;
  int resizeWidth = 0, resizeHeight = 0;
  int filter = kBicubic;
  bool crop = true;
  int cropWidth = 0, cropHeight = 0;
  bool rescale = true;
  double rescaleFactor = 1.0 / 255.0;
  bool normalize = true;
  float mean[3] = {0, 0, 0};
  float std[3] = {1, 1, 1};
};

// Output dimensions for an input size: what the JS side allocates per image.
void OutputSize(const Spec& s, int w, int h, int* rw, int* rh, int* ow, int* oh) {
  *rw = w;
  *rh = h;
  if (s.resize) {
    if (s.shortestEdge > 0) {
      const int shortSide = w <= h ? w : h, longSide = w <= h ? h : w;
      const int newLong = static_cast<int>(static_cast<double>(s.shortestEdge) * longSide / shortSide);
      *rw = w <= h ? s.shortestEdge : newLong;
      *rh = w <= h ? newLong : s.shortestEdge;
    } else {
      *rw = s.resizeWidth;
      *rh = s.resizeHeight;
    }
  }
  *ow = s.crop ? s.cropWidth : *rw;
  *oh = s.crop ? s.cropHeight : *rh;
}

// rgb: w x h x 3. Writes 3 x oh x ow floats into out (capacity checked by the caller).
void Preprocess(const Spec& s, const uint8_t* rgb, int w, int h, float* out, int ow, int oh) {
  int rw, rh, ow2, oh2;
  OutputSize(s, w, h, &rw, &rh, &ow2, &oh2);
  // HF's center_crop: top = (H - crop) // 2 (floor), zero pixels where the crop leaves the image.
  auto floorHalf = [](int d) { return d >= 0 ? d / 2 : -((-d + 1) / 2); };
  const int top = s.crop ? floorHalf(rh - oh) : 0;
  const int left = s.crop ? floorHalf(rw - ow) : 0;
  // The resized image's columns and rows the crop keeps.
  const int x0 = std::max(0, left), x1 = std::min(rw, left + ow);
  const int y0 = std::max(0, top), y1 = std::min(rh, top + oh);

  const bool needH = rw != w, needV = rh != h;
  const Coeffs ch = needH ? Precompute(w, rw, s.filter) : Coeffs();
  const Coeffs cv = needV ? Precompute(h, rh, s.filter) : Coeffs();
  // Source rows the vertical pass reads (all of them for the kept output rows).
  int rowLo = y0, rowHi = y1;
  if (needV && y1 > y0) {
    rowLo = cv.first[y0];
    rowHi = 0;
    for (int y = y0; y < y1; y++) rowHi = std::max(rowHi, cv.first[y] + cv.count[y]);
  }
  const int tw = std::max(0, x1 - x0);
  // Horizontal pass (PIL does it first) over the needed source rows, kept columns only.
  std::vector<uint8_t> temp(static_cast<size_t>(std::max(0, rowHi - rowLo)) * tw * 3);
  for (int y = rowLo; y < rowHi; y++) {
    const uint8_t* src = rgb + static_cast<size_t>(y) * w * 3;
    uint8_t* dst = temp.data() + static_cast<size_t>(y - rowLo) * tw * 3;
    for (int x = x0; x < x1; x++) {
      if (!needH) {
        std::memcpy(dst + (x - x0) * 3, src + x * 3, 3);
        continue;
      }
      const int* k = &ch.weights[static_cast<size_t>(x) * ch.ksize];
      const uint8_t* p = src + ch.first[x] * 3;
      int s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int i = 0; i < ch.count[x]; i++, p += 3) {
        s0 += p[0] * k[i];
        s1 += p[1] * k[i];
        s2 += p[2] * k[i];
      }
      dst[(x - x0) * 3] = Clip8(s0);
      dst[(x - x0) * 3 + 1] = Clip8(s1);
      dst[(x - x0) * 3 + 2] = Clip8(s2);
    }
  }
  // Per-channel affine map from a byte to the output float, HF's arithmetic: rescale in double,
  // cast to float32, then (x - mean) / std in float32.
  float lut[3][256];
  for (int c = 0; c < 3; c++) {
    for (int v = 0; v < 256; v++) {
      float x = s.rescale ? static_cast<float>(v * s.rescaleFactor) : static_cast<float>(v);
      lut[c][v] = s.normalize ? (x - s.mean[c]) / s.std[c] : x;
    }
  }
  const size_t plane = static_cast<size_t>(ow) * oh;
  for (int oy = 0; oy < oh; oy++) {
    const int y = oy + top;
    for (int ox = 0; ox < ow; ox++) {
      const int x = ox + left;
      uint8_t px[3] = {0, 0, 0};
      if (y >= y0 && y < y1 && x >= x0 && x < x1) {
        if (!needV) {
          std::memcpy(px, temp.data() + (static_cast<size_t>(y - rowLo) * tw + (x - x0)) * 3, 3);
        } else {
          const int* k = &cv.weights[static_cast<size_t>(y) * cv.ksize];
          int s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
          for (int i = 0; i < cv.count[y]; i++) {
            const uint8_t* p = temp.data() + (static_cast<size_t>(cv.first[y] + i - rowLo) * tw + (x - x0)) * 3;
            s0 += p[0] * k[i];
            s1 += p[1] * k[i];
            s2 += p[2] * k[i];
          }
          px[0] = Clip8(s0);
          px[1] = Clip8(s1);
          px[2] = Clip8(s2);
        }
      }
      const size_t o = static_cast<size_t>(oy) * ow + ox;
      out[o] = lut[0][px[0]];
      out[plane + o] = lut[1][px[1]];
      out[2 * plane + o] = lut[2][px[2]];
    }
  }
}

// Raw pixels with 1-4 channels to RGB as PIL's convert("RGB"): grey replicated, alpha dropped.
std::vector<uint8_t> ToRgb(const uint8_t* src, int w, int h, int channels) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  const size_t n = static_cast<size_t>(w) * h;
  for (size_t i = 0; i < n; i++) {
    const uint8_t* p = src + i * channels;
    if (channels >= 3) {
      rgb[i * 3] = p[0];
      rgb[i * 3 + 1] = p[1];
      rgb[i * 3 + 2] = p[2];
    } else {
      rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = p[0];
    }
  }
  return rgb;
}

Spec ParseSpec(const Napi::Object& o) {
  Spec s;
  auto num = [&](const char* key, double fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
  };
  auto flag = [&](const char* key, bool fallback) {
    Napi::Value v = o.Get(key);
    return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
  };
  s.resize = flag("resize", true);
  s.shortestEdge = static_cast<int>(num("shortestEdge", 0));
  s.resizeWidth = static_cast<int>(num("resizeWidth", 0));
  s.resizeHeight = static_cast<int>(num("resizeHeight", 0));
  s.filter = static_cast<int>(num("resample", kBicubic));
  s.crop = flag("crop", true);
  s.cropWidth = static_cast<int>(num("cropWidth", 0));
  s.cropHeight = static_cast<int>(num("cropHeight", 0));
  s.rescale = flag("rescale", true);
  s.rescaleFactor = num("rescaleFactor", 1.0 / 255.0);
  s.normalize = flag("normalize", true);
  Napi::Value mean = o.Get("mean"), std = o.Get("std");
  for (uint32_t c = 0; c < 3; c++) {
    if (mean.IsArray()) s.mean[c] = mean.As<Napi::Array>().Get(c).As<Napi::Number>().FloatValue();
    if (std.IsArray()) s.std[c] = std.As<Napi::Array>().Get(c).As<Napi::Number>().FloatValue();
  }
  if (s.filter < 0 || s.filter > 5) throw Napi::Error::New(o.Env(), "resample must be 0-5 (PIL's filter ids)");
  if (s.resize && s.shortestEdge <= 0 && (s.resizeWidth <= 0 || s.resizeHeight <= 0)) throw Napi::Error::New(o.Env(), "resize needs shortestEdge or resizeWidth + resizeHeight");
  if (s.crop && (s.cropWidth <= 0 || s.cropHeight <= 0)) throw Napi::Error::New(o.Env(), "crop needs cropWidth and cropHeight");
  return s;
}

class PreprocessWorker : public Napi::AsyncWorker {
 public:
  PreprocessWorker(Napi::Env env, Napi::Buffer<uint8_t> input, bool jpeg, int w, int h, int channels, Spec spec, Napi::Float32Array out)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), jpeg_(jpeg), w_(w), h_(h), channels_(channels), spec_(spec) {
    inputRef_ = Napi::Persistent(input.As<Napi::Object>());
    outRef_ = Napi::Persistent(out.As<Napi::Object>());
    input_ = input.Data();
    inputLen_ = input.Length();
    out_ = out.Data();
    outLen_ = out.ElementLength();
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    uint8_t* decoded = nullptr;
    std::vector<uint8_t> rgb;
    const uint8_t* pixels = nullptr;
    if (jpeg_) {
      char message[imageops::kMessageSize];
      if (!imageops::Decode(input_, inputLen_, 1, nullptr, &decoded, &w_, &h_, message)) {
        SetError(std::string("JPEG decode failed: ") + message);
        return;
      }
      pixels = decoded;
    } else if (channels_ == 3) {
      pixels = input_;
    } else {
      rgb = ToRgb(input_, w_, h_, channels_);
      pixels = rgb.data();
    }
    int rw, rh, ow, oh;
    OutputSize(spec_, w_, h_, &rw, &rh, &ow, &oh);
    if (static_cast<size_t>(ow) * oh * 3 > outLen_ || rw <= 0 || rh <= 0) {
      std::free(decoded);
      SetError("output tensor too small for " + std::to_string(ow) + "x" + std::to_string(oh) + " (image " + std::to_string(w_) + "x" + std::to_string(h_) + ")");
      return;
    }
    Preprocess(spec_, pixels, w_, h_, out_, ow, oh);
    std::free(decoded);
  }
  void OnOK() override {
    Napi::Object r = Napi::Object::New(Env());
    r.Set("width", w_);
    r.Set("height", h_);
    deferred_.Resolve(r);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference inputRef_, outRef_;
  const uint8_t* input_ = nullptr;
  size_t inputLen_ = 0;
  float* out_ = nullptr;
  size_t outLen_ = 0;
  bool jpeg_;
  int w_, h_, channels_;
  Spec spec_;
};

// clipPreprocessJpeg(jpeg: Buffer, spec, out: Float32Array): Promise<{width, height}>
Napi::Value PreprocessJpegJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsBuffer() || !info[1].IsObject() || !info[2].IsTypedArray()) {
    throw Napi::TypeError::New(env, "clipPreprocessJpeg(jpeg: Buffer, spec: object, out: Float32Array)");
  }
  auto* w = new PreprocessWorker(env, info[0].As<Napi::Buffer<uint8_t>>(), true, 0, 0, 3, ParseSpec(info[1].As<Napi::Object>()), info[2].As<Napi::Float32Array>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// clipPreprocessRaw(pixels: Buffer, width, height, channels, spec, out: Float32Array): Promise<{width, height}>
Napi::Value PreprocessRawJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsBuffer() || !info[4].IsObject() || !info[5].IsTypedArray()) {
    throw Napi::TypeError::New(env, "clipPreprocessRaw(pixels: Buffer, width, height, channels, spec: object, out: Float32Array)");
  }
  const int w = info[1].As<Napi::Number>().Int32Value(), h = info[2].As<Napi::Number>().Int32Value(), c = info[3].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> px = info[0].As<Napi::Buffer<uint8_t>>();
  if (w <= 0 || h <= 0 || c < 1 || c > 4 || px.Length() < static_cast<size_t>(w) * h * c) {
    throw Napi::RangeError::New(env, "clipPreprocessRaw: pixels must hold width x height x channels bytes, channels 1-4");
  }
  auto* worker = new PreprocessWorker(env, px, false, w, h, c, ParseSpec(info[4].As<Napi::Object>()), info[5].As<Napi::Float32Array>());
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

}  // namespace

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("clipPreprocessJpeg", Napi::Function::New(env, PreprocessJpegJs));
  exports.Set("clipPreprocessRaw", Napi::Function::New(env, PreprocessRawJs));
}

}  // namespace clip_preprocess
