// JPEG decode and encode on the system's libjpeg-turbo. Decoding scales in the DCT domain (1/2, 1/4,
// 1/8) and can hand a progressive file's refinement scans to progressive-refine.cc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace imageops {

struct HeaderResult {
  int width = 0, height = 0, components = 0;
  const char* colorSpace = "unknown";
  bool progressive = false;
};

// message: a buffer of at least kMessageSize bytes, set when a call returns false.
constexpr size_t kMessageSize = 200;

// Reads the header into *header when given; then, when out is given, decodes to 3-channel RGB
// scaled by 1/denom (denom 1, 2, 4 or 8) into a malloc'd *out.
bool Decode(const uint8_t* data, size_t len, int denom, HeaderResult* header, uint8_t** out, int* width, int* height,
            char* message);

// Decodes to RGB at 1/denom; progressive files have their refinement scans decoded by our own code
// when ownRefinement is set and the file allows it (*refinedHere tells), else libjpeg decodes all.
bool DecodeRgb(const uint8_t* data, size_t len, int denom, bool ownRefinement, uint8_t** out, int* width, int* height,
               bool* refinedHere, char* message);

// Baseline JPEG, 4:2:0, standard Huffman tables (libjpeg's defaults, as OpenCV's imencode); *out is malloc'd.
bool Encode(const uint8_t* rgb, int width, int height, int channels, int quality, uint8_t** out, unsigned long* outLen,
            char* message);

// JPEG_LIB_VERSION of the libjpeg the addon was built against (62, 80...).
int LibjpegVersion();

}  // namespace imageops
