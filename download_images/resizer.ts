// img2dataset 1.47's resizer (reference img2dataset.md section 3): the same filters, output sizes,
// padding, crop offsets, error strings and encode settings. Three engines:
// - fast (the default when lib/image-ops is built): plain JPEGs are decoded by libjpeg-turbo with
//   DCT-domain downscaling, resampled (exact INTER_AREA footprints for "area"), padded or cropped
//   and encoded in one call off the JS thread; so are 8-bit PNGs and still WebPs (libspng,
//   libwebp) without a profile or EXIF; other inputs are decoded by sharp, then go through the
//   same resampler and encoder. About half the CPU of the sharp engine (download_images/README).
// - exact: the same without DCT-domain downscaling, and OpenCV's Lanczos4 when shrinking too: what
//   OpenCV does, so a plain JPEG comes out byte-identical to img2dataset's with its area / lanczos
//   interpolations (test/resizer-exact.test.ts), at about the CPU of sharp.
// - sharp: libvips does it all, with its own shrink-on-load and kernels.
// Deliberate differences from img2dataset: EXIF orientation is applied first, greyscale/CMYK become
// RGB, GIFs decode (first frame), and a decompression-bomb cap is checked from the header before
// any pixel is decoded.
import sharp, { type KernelEnum, type Sharp, type SharpOptions } from 'sharp';
import { dctScaleDenom, isJpeg, loadImageOps, readJpegMarkers, type ImageOp, type ImageOps, type RawImage, type ResampleKernel } from '../lib/image-ops/index.ts';
import { readPngOrWebpHeader } from '../lib/image-ops/png-webp-header.ts';
import { blurBoxes } from './blurrer.ts';

export type ResizeMode = 'no' | 'border' | 'keep_ratio' | 'keep_ratio_largest' | 'center_crop';
export type EncodeFormat = 'jpg' | 'png' | 'webp';

export interface ResizerOptions {
  imageSize: number;
  resizeMode: ResizeMode;
  resizeOnlyIfBigger: boolean;
  /** img2dataset's names: nearest, linear, bilinear, cubic, bicubic, area, lanczos, lanczos4. */
  upscaleInterpolation: string;
  downscaleInterpolation: string;
  encodeQuality: number;
  encodeFormat: EncodeFormat;
  skipReencode: boolean;
  disableAllReencoding: boolean;
  minImageSize: number;
  maxImageArea: number;
  maxAspectRatio: number;
  /** Decompression-bomb cap, checked from the header: larger images fail without being decoded. */
  maxImagePixels: number;
  /** fast and exact need the built addon (npm run build:native); without it they mean sharp. */
  engine?: ResizerEngine;
}

export const RESIZER_ENGINES = ['fast', 'exact', 'sharp'] as const;
export type ResizerEngine = (typeof RESIZER_ENGINES)[number];

export interface ResizeResult {
  image: Buffer | null;
  width: number | null;
  height: number | null;
  originalWidth: number | null;
  originalHeight: number | null;
  error: string | null;
}

export const RESIZE_MODES: readonly ResizeMode[] = ['no', 'border', 'keep_ratio', 'keep_ratio_largest', 'center_crop'];
export const ENCODE_FORMATS: readonly EncodeFormat[] = ['jpg', 'png', 'webp'];
/** sharp's own default pixel limit (0x3FFF * 0x3FFF). */
export const DEFAULT_MAX_IMAGE_PIXELS = 268_402_689;

export const DEFAULT_RESIZER_OPTIONS: ResizerOptions = {
  imageSize: 256,
  resizeMode: 'border',
  resizeOnlyIfBigger: false,
  upscaleInterpolation: 'lanczos',
  downscaleInterpolation: 'area',
  encodeQuality: 95,
  encodeFormat: 'jpg',
  skipReencode: false,
  disableAllReencoding: false,
  minImageSize: 0,
  maxImageArea: Infinity,
  maxAspectRatio: Infinity,
  maxImagePixels: DEFAULT_MAX_IMAGE_PIXELS,
};

/** Error strings of img2dataset's resizer, verbatim (they become `status_dict` keys). */
export const RESIZE_ERRORS = {
  decoding: 'Image decoding error',
  tooSmall: 'image too small',
  areaTooLarge: 'image area too large',
  aspectRatioTooLarge: 'aspect ratio too large',
  /** Ours: the header declares more pixels than --max-image-pixels allows. */
  tooManyPixels: 'image pixels exceed max_image_pixels',
} as const;

type Kernel = keyof KernelEnum;

// libvips has no INTER_AREA; its triangle filter scaled to the shrink factor is the closest
// antialiased average. OpenCV's 8-tap Lanczos maps to libvips' 6-tap one.
const KERNELS: Record<string, Kernel> = {
  nearest: 'nearest',
  linear: 'linear',
  bilinear: 'linear',
  area: 'linear',
  cubic: 'cubic',
  bicubic: 'cubic',
  lanczos: 'lanczos3',
  lanczos4: 'lanczos3',
};

export function kernelFor(interpolation: string): Kernel {
  const k = KERNELS[interpolation.toLowerCase()];
  if (!k) throw new Error(`Invalid option for interpolation: ${interpolation}`);
  return k;
}

const NATIVE_KERNELS: Record<string, ResampleKernel> = {
  nearest: 'nearest',
  linear: 'linear',
  bilinear: 'linear',
  area: 'area',
  cubic: 'cubic',
  bicubic: 'cubic',
  lanczos: 'lanczos4',
  lanczos4: 'lanczos4',
};

/** The engine createResizer will use (fast when not asked), and why when it is not the asked-for one. */
export function resolveEngine(asked: ResizerEngine | undefined): { engine: ResizerEngine; ops: ImageOps | null; note: string | null } {
  if (asked === 'sharp') return { engine: 'sharp', ops: null, note: null };
  const { ops, reason } = loadImageOps();
  if (ops) return { engine: asked ?? 'fast', ops, note: null };
  return { engine: 'sharp', ops: null, note: `the ${asked ?? 'fast'} resize engine is unavailable (${reason}); resizing with sharp, at about twice the CPU per image` };
}

/** Python's round(): half to even. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** What Python's imghdr.what() says for the three target formats (null for anything else). */
export function imghdrWhat(b: Buffer): EncodeFormat | null {
  if (b.length >= 10) {
    const tag = b.toString('latin1', 6, 10);
    if (tag === 'JFIF' || tag === 'Exif') return 'jpg';
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff && b[3] === 0xdb) return 'jpg';
  if (b.length >= 8 && b.subarray(0, 8).equals(PNG_SIGNATURE)) return 'png';
  if (b.length >= 12 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') return 'webp';
  return null;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** The geometry img2dataset applies: resize target, then crop or pad, as pure numbers. */
export interface ResizePlan {
  /** Size after the resize step (equal to the input when no resize happens). */
  resizedWidth: number;
  resizedHeight: number;
  resized: boolean;
  downscale: boolean;
  crop: { left: number; top: number; width: number; height: number } | null;
  pad: { top: number; bottom: number; left: number; right: number } | null;
  width: number;
  height: number;
}

export function planResize(width: number, height: number, mode: ResizeMode, imageSize: number, resizeOnlyIfBigger: boolean): ResizePlan {
  const plan: ResizePlan = {
    resizedWidth: width,
    resizedHeight: height,
    resized: false,
    downscale: false,
    crop: null,
    pad: null,
    width,
    height,
  };
  if (mode === 'no') return plan;
  const bySmallest = mode === 'keep_ratio' || mode === 'center_crop';
  const side = bySmallest ? Math.min(width, height) : Math.max(width, height);
  plan.downscale = side > imageSize;
  if (resizeOnlyIfBigger && !plan.downscale) return plan;
  plan.resized = true;
  const scale = imageSize / side;
  plan.resizedHeight = Math.max(1, roundHalfEven(height * scale));
  plan.resizedWidth = Math.max(1, roundHalfEven(width * scale));
  const h = plan.resizedHeight;
  const w = plan.resizedWidth;
  if (mode === 'center_crop') {
    const top = Math.floor((h - imageSize) / 2);
    const left = Math.floor((w - imageSize) / 2);
    plan.crop = { left, top, width: imageSize, height: imageSize };
    plan.width = plan.height = imageSize;
  } else if (mode === 'border') {
    // The odd extra pixel goes to the bottom / right.
    const top = Math.trunc((imageSize - h) / 2);
    const left = Math.trunc((imageSize - w) / 2);
    plan.pad = { top, bottom: imageSize - h - top, left, right: imageSize - w - left };
    plan.width = plan.height = imageSize;
  } else {
    plan.width = w;
    plan.height = h;
  }
  return plan;
}

export function validateResizerOptions(o: ResizerOptions): void {
  if (!RESIZE_MODES.includes(o.resizeMode)) throw new Error(`Invalid option for resize_mode: ${o.resizeMode}`);
  if (!ENCODE_FORMATS.includes(o.encodeFormat)) throw new Error(`Invalid option for encode_format: ${o.encodeFormat}`);
  if (o.encodeFormat === 'png' && !(o.encodeQuality >= 0 && o.encodeQuality <= 9 && Number.isInteger(o.encodeQuality))) {
    throw new Error('For png, encode quality represents compression which must be between 0 and 9, got ' + o.encodeQuality);
  }
  if (!(o.imageSize >= 1) || !Number.isInteger(o.imageSize)) throw new Error(`image_size must be a positive integer, got ${o.imageSize}`);
  kernelFor(o.upscaleInterpolation);
  kernelFor(o.downscaleInterpolation);
}

function encode(img: Sharp, o: ResizerOptions): Sharp {
  switch (o.encodeFormat) {
    case 'jpg':
      // OpenCV's imencode defaults: baseline, Huffman tables not optimised, 4:2:0, no EXIF.
      return img.jpeg({
        quality: Math.min(100, Math.max(1, Math.round(o.encodeQuality))),
        progressive: false,
        optimiseCoding: false,
        chromaSubsampling: '4:2:0',
        mozjpeg: false,
      });
    case 'png':
      return img.png({ compressionLevel: o.encodeQuality });
    case 'webp':
      // OpenCV: a quality above 100 means lossless.
      return o.encodeQuality > 100
        ? img.webp({ lossless: true })
        : img.webp({ quality: Math.min(100, Math.max(1, Math.round(o.encodeQuality))) });
  }
}

const WHITE = { r: 255, g: 255, b: 255 };

/**
 * Border mode's white padding, done on the raw pixels: libvips' extend() in the same pipeline cost
 * 0.8 ms per image here (more than the whole JPEG encode), copying rows into a white canvas 0.05 ms.
 */
async function padWhite(img: Sharp, pad: { top: number; bottom: number; left: number; right: number }): Promise<Sharp> {
  const { data, info } = await img.removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const c = info.channels;
  const width = info.width + pad.left + pad.right;
  const height = info.height + pad.top + pad.bottom;
  const out = Buffer.alloc(width * height * c, 255);
  const row = info.width * c;
  for (let y = 0; y < info.height; y++) data.copy(out, ((pad.top + y) * width + pad.left) * c, y * row, (y + 1) * row);
  return sharp(out, { raw: { width, height, channels: c } });
}

// img2dataset returns no sizes at all with an error.
const fail = (error: string): ResizeResult => ({
  image: null,
  width: null,
  height: null,
  originalWidth: null,
  originalHeight: null,
  error,
});

/** Header facts, read without decoding pixels. */
interface Probe {
  width: number;
  height: number;
  orientation: number;
  hasAlpha: boolean;
  /**
   * The addon decodes it with the pixels libvips would give: a YCbCr / grey / RGB JPEG without an ICC
   * profile or with an sRGB one, or a CMYK one without a profile (converted as OpenCV does). Other
   * profiles (Display P3, Adobe RGB, a CMYK press profile) go to libvips, which colour-manages them.
   */
  plainJpeg: boolean;
  /** The addon decodes it with libvips' pixels: an 8-bit PNG or still WebP without profile or EXIF. */
  plainPngOrWebp: boolean;
}

const PLAIN_JPEG_SPACES = new Set(['ycbcr', 'grayscale', 'rgb']);
const CMYK_JPEG_SPACES = new Set(['cmyk', 'ycck']);
/** 32 MP decode to 96 MB of RGB; bigger images go through libvips, which streams them. */
const NATIVE_MAX_DECODED_PIXELS = 32_000_000;

async function probe(input: Buffer, ops: ImageOps | null): Promise<Probe | null> {
  if (ops && isJpeg(input)) {
    try {
      const h = ops.readHeader(input);
      const m = readJpegMarkers(input);
      return {
        width: h.width,
        height: h.height,
        orientation: m.orientation,
        hasAlpha: false,
        plainJpeg: PLAIN_JPEG_SPACES.has(h.colorSpace) ? !m.hasIccProfile || m.iccIsSrgb : CMYK_JPEG_SPACES.has(h.colorSpace) && !m.hasIccProfile,
        plainPngOrWebp: false,
      };
    } catch {
      // Not something libjpeg reads: let libvips try.
    }
  }
  const pngOrWebp = ops ? readPngOrWebpHeader(input) : null;
  if (pngOrWebp) return { width: pngOrWebp.width, height: pngOrWebp.height, orientation: 1, hasAlpha: pngOrWebp.hasAlpha, plainJpeg: false, plainPngOrWebp: true };
  try {
    const meta = await sharp(input, { limitInputPixels: false, failOn: 'none', pages: 1 }).metadata();
    if (!meta.width || !meta.height) return null;
    return { width: meta.width, height: meta.height, orientation: meta.orientation ?? 1, hasAlpha: meta.hasAlpha, plainJpeg: false, plainPngOrWebp: false };
  } catch {
    return null;
  }
}

export function createResizer(opts: ResizerOptions): (input: Buffer, bboxes?: number[][]) => Promise<ResizeResult> {
  const o = { ...opts };
  validateResizerOptions(o);
  const { engine, ops } = resolveEngine(o.engine);
  const upKernel = kernelFor(o.upscaleInterpolation);
  const downKernel = kernelFor(o.downscaleInterpolation);
  // OpenCV's own Lanczos (img2dataset's default for enlarging) wherever antialiasing does not
  // matter: every enlargement, and shrinks in the exact engine.
  const nativeKernel = (name: string, shrink: boolean): ResampleKernel => {
    const k = NATIVE_KERNELS[name.toLowerCase()]!;
    return k === 'lanczos4' && (!shrink || engine === 'exact') ? 'opencv-lanczos4' : k;
  };
  const nativeUp = nativeKernel(o.upscaleInterpolation, false);
  const nativeDown = nativeKernel(o.downscaleInterpolation, true);
  const target = o.encodeFormat;
  const jpegQuality = Math.min(100, Math.max(1, Math.round(o.encodeQuality)));
  const sharpInput = {
    limitInputPixels: o.maxImagePixels,
    // Decode what a browser would show; a truncated file still yields an image, as with OpenCV.
    failOn: 'none',
    pages: 1,
  } satisfies SharpOptions;

  /** Upright sRGB pixels without alpha (flattened on white), decoded by libvips. */
  const decodeWithSharp = async (input: Buffer, hasAlpha: boolean) => {
    let img = sharp(input, sharpInput).autoOrient();
    if (hasAlpha) img = img.flatten({ background: WHITE });
    return img.toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
  };

  /** The DCT scale for a stored width x height; the plan's sizes are upright, so orientations 5-8 swap them. */
  const dctDenom = (p: Probe, plan: ResizePlan): 1 | 2 | 4 | 8 => {
    if (engine !== 'fast' || !p.plainJpeg || !plan.resized || !plan.downscale) return 1;
    const swap = p.orientation >= 5;
    return dctScaleDenom(p.width, p.height, swap ? plan.resizedHeight : plan.resizedWidth, swap ? plan.resizedWidth : plan.resizedHeight);
  };
  /** What the native engines hold decoded at once; libvips streams instead, so huge images go there. */
  const decodedPixels = (p: Probe, plan: ResizePlan): number => {
    const d = dctDenom(p, plan);
    return Math.ceil(p.width / d) * Math.ceil(p.height / d);
  };

  /** fast and exact: one addon call for a plain JPEG, PNG or WebP, libvips decode + addon otherwise. */
  async function resizeNative(addon: ImageOps, input: Buffer, p: Probe, plan: ResizePlan, boxes: number[][] | null): Promise<Buffer> {
    const resize: ImageOp = plan.resized
      ? { resizeWidth: plan.resizedWidth, resizeHeight: plan.resizedHeight, kernel: plan.downscale ? nativeDown : nativeUp }
      : {};
    const finish: ImageOp = { crop: plan.crop, pad: plan.pad, quality: target === 'jpg' ? jpegQuality : 0 };
    let pixels: RawImage | null = null;
    try {
      if (p.plainJpeg) {
        pixels = await addon.transformJpeg(input, { denom: dctDenom(p, plan), orientation: p.orientation, ...resize, ...(boxes ? {} : finish) });
      } else if (p.plainPngOrWebp) {
        pixels = await addon.transformPngOrWebp(input, { ...resize, ...(boxes ? {} : finish) });
      }
    } catch {
      // Data libjpeg, libspng or libwebp give up on: libvips gets its chance below.
    }
    if (!pixels) {
      const { data, info } = await decodeWithSharp(input, p.hasAlpha);
      pixels = await addon.transformRaw(data, info.width, info.height, info.channels, boxes ? resize : { ...resize, ...finish });
    }
    if (boxes) {
      // Blurring needs the pixels between the resize and the crop / pad.
      blurBoxes(pixels.data, pixels.width, pixels.height, pixels.channels, boxes);
      pixels = await addon.transformRaw(pixels.data, pixels.width, pixels.height, pixels.channels, finish);
    }
    return target === 'jpg' ? pixels.data : encodeRaw(pixels.data, pixels.width, pixels.height, pixels.channels);
  }

  const encodeRaw = (data: Buffer, width: number, height: number, channels: number): Promise<Buffer> =>
    encode(sharp(data, { raw: { width, height, channels: channels as 1 | 3 } }), o).toBuffer();

  /** The sharp engine: one libvips pipeline from the encoded buffer, so libvips can shrink on load. */
  async function resizeSharp(input: Buffer, p: Probe, plan: ResizePlan, boxes: number[][] | null, w: number, h: number): Promise<Buffer> {
    let img = sharp(input, sharpInput).autoOrient();
    if (p.hasAlpha) img = img.flatten({ background: WHITE });
    img = img.toColourspace('srgb');
    if (plan.resized && (plan.resizedWidth !== w || plan.resizedHeight !== h)) {
      img = img.resize(plan.resizedWidth, plan.resizedHeight, {
        fit: 'fill',
        kernel: plan.downscale ? downKernel : upKernel,
      });
    }
    if (boxes) {
      // Blurring needs the pixels between the resize and the crop / pad.
      const { data, info } = await img.removeAlpha().raw().toBuffer({ resolveWithObject: true });
      blurBoxes(data, info.width, info.height, info.channels, boxes);
      img = sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } });
      // img2dataset forgets to re-encode after a blur on the unresized path; we do not.
    }
    if (plan.crop) img = img.extract(plan.crop);
    if (plan.pad) img = await padWhite(img, plan.pad);
    return encode(img, o).toBuffer();
  }

  return async function resize(input: Buffer, bboxes?: number[][]): Promise<ResizeResult> {
    if (o.disableAllReencoding) {
      return { image: input, width: null, height: null, originalWidth: null, originalHeight: null, error: null };
    }
    let encodeNeeded = o.skipReencode ? imghdrWhat(input) !== target : true;

    // Header only: the pixel cap is checked here so a bomb gets its own message.
    const p = await probe(input, ops);
    if (!p) return fail(RESIZE_ERRORS.decoding);
    if (p.width * p.height > o.maxImagePixels) return fail(RESIZE_ERRORS.tooManyPixels);

    const swap = p.orientation >= 5 && p.orientation <= 8;
    const w = swap ? p.height : p.width;
    const h = swap ? p.width : p.height;
    // Kept bytes would still carry the tag, so readers that ignore EXIF would see other sizes.
    if (p.orientation !== 1) encodeNeeded = true;
    if (p.hasAlpha) encodeNeeded = true;

    if (Math.min(h, w) < o.minImageSize) return fail(RESIZE_ERRORS.tooSmall);
    if (h * w > o.maxImageArea) return fail(RESIZE_ERRORS.areaTooLarge);
    if (Math.max(h, w) / Math.min(h, w) > o.maxAspectRatio) return fail(RESIZE_ERRORS.aspectRatioTooLarge);

    const plan = planResize(w, h, o.resizeMode, o.imageSize, o.resizeOnlyIfBigger);
    if (plan.resized) encodeNeeded = true;
    const boxes = bboxes && bboxes.length > 0 ? bboxes : null;

    try {
      if (!encodeNeeded && !boxes) {
        return { image: input, width: w, height: h, originalWidth: w, originalHeight: h, error: null };
      }
      const out = ops && decodedPixels(p, plan) <= NATIVE_MAX_DECODED_PIXELS
        ? await resizeNative(ops, input, p, plan, boxes)
        : await resizeSharp(input, p, plan, boxes, w, h);
      return { image: out, width: plan.width, height: plan.height, originalWidth: w, originalHeight: h, error: null };
    } catch (err) {
      return fail(err instanceof Error ? err.message : String(err));
    }
  };
}

/** ResizerOptions from img2dataset-style option values (camelCase keys, any subset). */
export function resizerOptionsFromFlags(flags: Partial<Record<keyof ResizerOptions, unknown>>): ResizerOptions {
  const o: ResizerOptions = { ...DEFAULT_RESIZER_OPTIONS };
  const num = (v: unknown, d: number): number => (v === null || v === undefined ? d : typeof v === 'string' && /^inf/i.test(v) ? Infinity : Number(v));
  o.imageSize = num(flags.imageSize, o.imageSize);
  if (flags.resizeMode !== undefined && flags.resizeMode !== null) o.resizeMode = String(flags.resizeMode) as ResizeMode;
  if (flags.resizeOnlyIfBigger !== undefined) o.resizeOnlyIfBigger = Boolean(flags.resizeOnlyIfBigger);
  if (flags.upscaleInterpolation) o.upscaleInterpolation = String(flags.upscaleInterpolation);
  if (flags.downscaleInterpolation) o.downscaleInterpolation = String(flags.downscaleInterpolation);
  o.encodeQuality = num(flags.encodeQuality, o.encodeQuality);
  if (flags.encodeFormat) o.encodeFormat = String(flags.encodeFormat) as EncodeFormat;
  if (flags.skipReencode !== undefined) o.skipReencode = Boolean(flags.skipReencode);
  if (flags.disableAllReencoding !== undefined) o.disableAllReencoding = Boolean(flags.disableAllReencoding);
  o.minImageSize = num(flags.minImageSize, o.minImageSize);
  o.maxImageArea = num(flags.maxImageArea, o.maxImageArea);
  o.maxAspectRatio = num(flags.maxAspectRatio, o.maxAspectRatio);
  o.maxImagePixels = num(flags.maxImagePixels, o.maxImagePixels);
  validateResizerOptions(o);
  return o;
}
