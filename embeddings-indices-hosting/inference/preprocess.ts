// preprocessor_config.json -> the native preprocessing (lib/image-ops/clip-preprocess.cc), every
// value honoured as Hugging Face's CLIPImageProcessor reads it, none hard-coded. JPEG goes straight
// to the addon (CMYK / YCCK JPEGs converted as OpenCV does, jpeg-codec.cc, which can differ a little
// from Pillow's conversion); other formats (PNG, WebP, GIF, TIFF) are decoded to raw pixels by sharp
// first. No EXIF rotation either way: PIL, and so the HF processor, applies none.
import sharp from 'sharp';
import { isJpeg } from '../../lib/image-ops/index.ts';
import { loadClipPreprocess, type ClipPreprocessOps, type ClipPreprocessSpec } from '../../lib/image-ops/clip-preprocess.ts';
import { ModelFolderError, readJsonFile } from './clip-model.ts';

const FILTER_NAMES = ['nearest', 'lanczos', 'bilinear', 'bicubic', 'box', 'hamming'];

type Json = Record<string, unknown>;

function fail(path: string, msg: string): never {
  throw new ModelFolderError(`${path}: ${msg}`);
}

function bool(path: string, cfg: Json, key: string, dflt: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') fail(path, `${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function positiveInt(path: string, key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(path, `${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function triple(path: string, cfg: Json, key: string, dflt: [number, number, number]): [number, number, number] {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v === 'number') return [v, v, v];
  if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    fail(path, `${key} must be three numbers (one per RGB channel), got ${JSON.stringify(v)}`);
  }
  return v as [number, number, number];
}

/** Reads `size` / `crop_size` in every spelling HF writes: an int, {shortest_edge}, {height, width}. */
function sizeField(path: string, key: string, v: unknown): { shortest: number } | { width: number; height: number } {
  if (typeof v === 'number') return { shortest: positiveInt(path, key, v) };
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Json;
    if (o.shortest_edge !== undefined) {
      if (o.longest_edge !== undefined) fail(path, `${key}.longest_edge is not supported (CLIP models use shortest_edge)`);
      return { shortest: positiveInt(path, `${key}.shortest_edge`, o.shortest_edge) };
    }
    if (o.height !== undefined || o.width !== undefined) {
      return { height: positiveInt(path, `${key}.height`, o.height), width: positiveInt(path, `${key}.width`, o.width) };
    }
  }
  fail(path, `${key} must be an integer, {"shortest_edge": N} or {"height": H, "width": W}; got ${JSON.stringify(v)}`);
}

export interface ImagePreprocessing {
  spec: ClipPreprocessSpec;
  /** Side of the square the model takes (crop_size, or the exact resize size). */
  size: number;
  /** One line for the settings printed at start. */
  describe(): string;
}

/** Resolves preprocessor_config.json; the output must be the square the vision model takes. */
export function readPreprocessorConfig(path: string): ImagePreprocessing {
  const cfg = readJsonFile(path);
  const resize = bool(path, cfg, 'do_resize', true);
  const crop = bool(path, cfg, 'do_center_crop', true);
  const rescale = bool(path, cfg, 'do_rescale', true);
  const normalize = bool(path, cfg, 'do_normalize', true);
  // do_convert_rgb false: images are still made RGB, as the model takes three channels.
  bool(path, cfg, 'do_convert_rgb', true);
  const resample = cfg.resample ?? 3;
  if (typeof resample !== 'number' || !Number.isInteger(resample) || resample < 0 || resample > 5) {
    fail(path, `resample must be a PIL filter id 0-5 (${FILTER_NAMES.map((n, i) => `${i} ${n}`).join(', ')}), got ${JSON.stringify(resample)}`);
  }
  const rescaleFactor = cfg.rescale_factor ?? 1 / 255;
  if (typeof rescaleFactor !== 'number' || !Number.isFinite(rescaleFactor)) fail(path, `rescale_factor must be a number, got ${JSON.stringify(rescaleFactor)}`);
  const mean = triple(path, cfg, 'image_mean', [0.48145466, 0.4578275, 0.40821073]);
  const std = triple(path, cfg, 'image_std', [0.26862954, 0.26130258, 0.27577711]);
  if (std.some((s) => s === 0)) fail(path, 'image_std has a zero');

  const spec: ClipPreprocessSpec = {
    resize, shortestEdge: 0, resizeWidth: 0, resizeHeight: 0, resample,
    crop, cropWidth: 0, cropHeight: 0, rescale, rescaleFactor, normalize, mean, std,
  };
  let outW = 0;
  let outH = 0;
  if (resize) {
    if (cfg.size === undefined) fail(path, 'do_resize is true but size is missing');
    const s = sizeField(path, 'size', cfg.size);
    if ('shortest' in s) spec.shortestEdge = s.shortest;
    else [spec.resizeWidth, spec.resizeHeight, outW, outH] = [s.width, s.height, s.width, s.height];
  }
  if (crop) {
    if (cfg.crop_size === undefined) fail(path, 'do_center_crop is true but crop_size is missing');
    const c = sizeField(path, 'crop_size', cfg.crop_size);
    [spec.cropWidth, spec.cropHeight] = 'shortest' in c ? [c.shortest, c.shortest] : [c.width, c.height];
    [outW, outH] = [spec.cropWidth, spec.cropHeight];
  }
  if (outW === 0 || outW !== outH) {
    fail(path, 'the settings do not give every image the same square size (use do_center_crop with crop_size, or size {"height","width"} with equal sides)');
  }
  return {
    spec,
    size: outW,
    describe: () =>
      [
        resize ? `resize ${spec.shortestEdge ? `shortest side to ${spec.shortestEdge}` : `to ${spec.resizeWidth}x${spec.resizeHeight}`} (${FILTER_NAMES[resample]})` : 'no resize',
        crop ? `centre crop ${spec.cropWidth}x${spec.cropHeight}` : 'no crop',
        rescale ? `rescale x${rescaleFactor.toPrecision(6)}` : 'no rescale',
        normalize ? `normalise mean [${mean.join(', ')}] std [${std.join(', ')}]` : 'no normalisation',
      ].join(', '),
  };
}

export class ImagePreprocessor {
  private readonly ops: ClipPreprocessOps;

  constructor(readonly preprocessing: ImagePreprocessing) {
    this.ops = loadClipPreprocess();
  }

  /** Fills `out` (3 x size x size floats) from encoded image bytes; rejects when they do not decode. */
  async run(bytes: Buffer, out: Float32Array): Promise<void> {
    const spec = this.preprocessing.spec;
    if (isJpeg(bytes)) {
      try {
        await this.ops.fromJpeg(bytes, spec, out);
        return;
      } catch (err) {
        // A colour conversion libjpeg refuses (an addon built before jpeg-codec.cc handled CMYK): sharp can.
        if (!/color ?space|conversion/i.test((err as Error).message)) throw err;
      }
    }
    const { data, info } = await sharp(bytes, { failOn: 'error', animated: false })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    await this.ops.fromRaw(data, info.width, info.height, info.channels, spec, out);
  }
}
