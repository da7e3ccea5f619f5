// The image-ops addon's N-API surface: stage 3's per-image work in one call off the JS thread
// (decode with DCT-domain downscaling -> resize -> crop or pad -> encode), plus header reads and a
// synchronous decode for tests. The work itself: jpeg-codec.cc (libjpeg-turbo), png-webp-codec.cc
// (libspng, libwebp), resample.cc (kernels), transform.cc (resize, crop, pad), progressive-refine.cc
// (progressive JPEG scans).
#include <napi.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "clip-preprocess.h"
#include "jpeg-codec.h"
#include "png-webp-codec.h"
#include "transform.h"

namespace {

using imageops::Apply;
using imageops::Decode;
using imageops::DecodePngOrWebpRgb;
using imageops::DecodeRgb;
using imageops::Encode;
using imageops::HeaderResult;
using imageops::Image;
using imageops::Op;
using imageops::ParseKernel;

// Hands a malloc'd block to JS without a copy, telling V8 its size so GC keeps up.
Napi::Buffer<uint8_t> AdoptBuffer(Napi::Env env, uint8_t* data, size_t len) {
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(len));
  return Napi::Buffer<uint8_t>::New(env, data, len, [len](Napi::Env e, uint8_t* p) {
    std::free(p);
    Napi::MemoryManagement::AdjustExternalMemory(e, -static_cast<int64_t>(len));
  });
}

// What a TransformWorker's input buffer holds.
enum class Source { kJpeg, kPngOrWebp, kRaw };

class TransformWorker : public Napi::AsyncWorker {
 public:
  // kRaw: pixels of width x height x channels; otherwise an encoded file, decoded to RGB.
  TransformWorker(Napi::Env env, Napi::Buffer<uint8_t> input, Source source, int width, int height, int channels, const Op& op)
      : Napi::AsyncWorker(env, "image-ops"),
        deferred_(Napi::Promise::Deferred::New(env)),
        input_(Napi::Persistent(input)),
        data_(input.Data()),
        len_(input.Length()),
        source_(source),
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
    char message[imageops::kMessageSize] = {0};
    const uint8_t* src = data_;
    int w = width_, h = height_, c = channels_;
    if (source_ == Source::kJpeg) {
      bool refinedHere;
      if (!DecodeRgb(data_, len_, op_.denom, true, &decoded_, &w, &h, &refinedHere, message)) return SetError(message);
    } else if (source_ == Source::kPngOrWebp) {
      if (!DecodePngOrWebpRgb(data_, len_, &decoded_, &w, &h, message)) return SetError(message);
    }
    if (source_ != Source::kRaw) {
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
  Source source_;
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
  op.orientation = IntField(o, "orientation", 1);
  if (op.orientation < 1 || op.orientation > 8) throw Napi::RangeError::New(env, "orientation must be 1-8");
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
  char message[imageops::kMessageSize] = {0};
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
  char message[imageops::kMessageSize] = {0};
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
  auto* w = new TransformWorker(info.Env(), buf, Source::kJpeg, 0, 0, 3, op);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// transformPngOrWebp(pngOrWebpBytes, op) -> Promise<{ data, width, height, channels }>; rejects what
// png-webp-codec.cc leaves to libvips.
Napi::Value TransformPngOrWebpJs(const Napi::CallbackInfo& info) {
  Napi::Buffer<uint8_t> buf = BufferArg(info, 0);
  Op op = ParseOp(info.Env(), info[1]);
  op.denom = 1;
  auto* w = new TransformWorker(info.Env(), buf, Source::kPngOrWebp, 0, 0, 3, op);
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
  auto* w = new TransformWorker(info.Env(), buf, Source::kRaw, width, height, channels, op);
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
  exports.Set("transformPngOrWebp", Napi::Function::New(env, TransformPngOrWebpJs));
  exports.Set("transformRaw", Napi::Function::New(env, TransformRawJs));
  exports.Set("trimHeap", Napi::Function::New(env, TrimHeapJs));
  exports.Set("libjpegVersion", imageops::LibjpegVersion());
  clip_preprocess::Register(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(image_ops, Init)

