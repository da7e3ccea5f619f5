// PNG (libspng) and WebP (libwebp) decoding to RGB with the pixels libvips gives, for the pictures
// whose libvips path costs 2-4x the decode itself (download_images/README.md, Speed).
#pragma once

#include <cstddef>
#include <cstdint>

namespace imageops {

// Decodes a PNG of bit depth 8 or less, or a still WebP, to 3-channel RGB in a malloc'd *out, alpha
// (and a PNG's tRNS) flattened on white. Returns false with *message for anything it leaves to
// libvips: 16-bit samples, an ICC profile, EXIF, animation, corrupt or truncated data.
bool DecodePngOrWebpRgb(const uint8_t* data, size_t len, uint8_t** out, int* width, int* height, char* message);

}  // namespace imageops
