// Resampling interleaved 8-bit pixels: separable kernels with float accumulation, plus OpenCV's
// INTER_LANCZOS4 and INTER_AREA 2x2 step for step (the exact engine's enlargements and halvings).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace imageops {

enum class Kernel { Nearest, Linear, Cubic, Area, Lanczos4, CvLanczos4 };

// "nearest", "linear", "cubic", "area", "lanczos4", "opencv-lanczos4"; false for anything else.
bool ParseKernel(const std::string& name, Kernel* k);

// sin(pi x) / (pi x), 1 at 0: the Lanczos window (also PIL's, in clip-preprocess.cc).
double Sinc(double x);

// w x h x c pixels to ow x oh x c: rows first (into floats), then columns.
std::vector<uint8_t> Resample(const uint8_t* src, int w, int h, int c, int ow, int oh, Kernel kernel);

}  // namespace imageops
