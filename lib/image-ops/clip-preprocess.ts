// Typed face of the image addon's CLIP preprocessing (clip-preprocess.cc): decode, RGB, PIL-exact
// resize, HF centre crop, rescale and normalise, written as float32 CHW into a caller's tensor.
import { loadAddon } from '../native-addon.ts';

/** Every value of a preprocessor_config.json, resolved (embeddings-indices-hosting/inference/preprocess.ts reads the file). */
export interface ClipPreprocessSpec {
  resize: boolean;
  /** > 0: the shorter side becomes this, the longer int(edge * long / short); 0: resizeWidth x resizeHeight. */
  shortestEdge: number;
  resizeWidth: number;
  resizeHeight: number;
  /** PIL's filter ids: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming. */
  resample: number;
  crop: boolean;
  cropWidth: number;
  cropHeight: number;
  rescale: boolean;
  rescaleFactor: number;
  normalize: boolean;
  mean: [number, number, number];
  std: [number, number, number];
}

interface Addon {
  clipPreprocessJpeg(jpeg: Buffer, spec: ClipPreprocessSpec, out: Float32Array): Promise<{ width: number; height: number }>;
  clipPreprocessRaw(pixels: Buffer, width: number, height: number, channels: number, spec: ClipPreprocessSpec, out: Float32Array): Promise<{ width: number; height: number }>;
}

export interface ClipPreprocessOps {
  /** JPEG bytes in; rejects with libjpeg's message when the data does not decode. Resolves to the source size. */
  fromJpeg(jpeg: Buffer, spec: ClipPreprocessSpec, out: Float32Array): Promise<{ width: number; height: number }>;
  /** Raw 8-bit pixels (1-4 channels: grey replicated, alpha dropped as PIL's convert("RGB")). */
  fromRaw(pixels: Buffer, width: number, height: number, channels: number, spec: ClipPreprocessSpec, out: Float32Array): Promise<{ width: number; height: number }>;
}

/** The preprocessing entry points, or throws naming why the addon is unavailable. */
export function loadClipPreprocess(): ClipPreprocessOps {
  const r = loadAddon<Addon>('image_ops');
  if (!r.addon) throw new Error(r.reason);
  const addon = r.addon;
  if (typeof addon.clipPreprocessJpeg !== 'function') throw new Error('the image_ops addon predates CLIP preprocessing: rebuild it with npm run build:native');
  return {
    fromJpeg: (jpeg, spec, out) => addon.clipPreprocessJpeg(jpeg, spec, out),
    fromRaw: (pixels, w, h, c, spec, out) => addon.clipPreprocessRaw(pixels, w, h, c, spec, out),
  };
}
