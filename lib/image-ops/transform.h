// One operation on decoded pixels: EXIF orientation, resize, then crop or pad. The N-API glue (addon.cc) runs it between
// a decode and an encode off the JS thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "resample.h"

namespace imageops {

struct Op {
  int denom = 1;
  int orientation = 1;  // EXIF 1-8, applied to the decoded pixels before the resize
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

// Pixels turned upright for an EXIF orientation (2-8); *w and *h become the upright size.
std::vector<uint8_t> Reorient(const uint8_t* src, int* w, int* h, int c, int orientation);

// Returns false with `message` set when the op does not fit the image.
bool Apply(const uint8_t* src, int w, int h, int c, const Op& op, Image* out, std::string* message);

}  // namespace imageops
