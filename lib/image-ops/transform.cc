// Orientation, resize, then crop or pad (see transform.h).
#include "transform.h"

#include <cstring>
#include <utility>

namespace imageops {

std::vector<uint8_t> Reorient(const uint8_t* src, int* w, int* h, int c, int orientation) {
  const int sw = *w, sh = *h;
  const bool swap = orientation >= 5;
  const int ow = swap ? sh : sw, oh = swap ? sw : sh;
  std::vector<uint8_t> out(static_cast<size_t>(ow) * oh * c);
  for (int y = 0; y < oh; y++) {
    uint8_t* dst = out.data() + static_cast<size_t>(y) * ow * c;
    for (int x = 0; x < ow; x++, dst += c) {
      // The stored pixel shown at (x, y) once upright.
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = sw - 1 - x; break;
        case 3: sx = sw - 1 - x; sy = sh - 1 - y; break;
        case 4: sy = sh - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = sh - 1 - x; break;
        case 7: sx = sw - 1 - y; sy = sh - 1 - x; break;
        case 8: sx = sw - 1 - y; sy = x; break;
        default: break;
      }
      std::memcpy(dst, src + (static_cast<size_t>(sy) * sw + sx) * c, static_cast<size_t>(c));
    }
  }
  *w = ow;
  *h = oh;
  return out;
}

bool Apply(const uint8_t* src, int w, int h, int c, const Op& op, Image* out, std::string* message) {
  std::vector<uint8_t> upright;
  if (op.orientation >= 2 && op.orientation <= 8) {
    upright = Reorient(src, &w, &h, c, op.orientation);
    src = upright.data();
  }
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
  if (!resized.empty()) out->pixels = std::move(resized);
  else if (!upright.empty()) out->pixels = std::move(upright);
  else out->pixels.assign(src, src + static_cast<size_t>(w) * h * c);
  return true;
}
}  // namespace imageops
