// CLIP image preprocessing (clip-preprocess.cc), registered on the image_ops addon's exports.
#pragma once
#include <napi.h>

namespace clip_preprocess {
// Adds clipPreprocessJpeg and clipPreprocessRaw to the addon's exports.
void Register(Napi::Env env, Napi::Object exports);
}  // namespace clip_preprocess
