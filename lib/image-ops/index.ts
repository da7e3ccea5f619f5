// Typed face of the image addon (addon.cc the N-API glue; jpeg-codec.cc libjpeg-turbo decode and
// encode; png-webp-codec.cc libspng and libwebp decode; resample.cc our resampler; transform.cc orientation, resize, crop, pad) plus the header
// facts libjpeg does not report (EXIF orientation, an embedded ICC profile), read from the marker
// segments in JS.
import { loadAddon } from '../native-addon.ts';

export interface JpegHeader {
  width: number;
  height: number;
  components: number;
  colorSpace: 'grayscale' | 'rgb' | 'ycbcr' | 'cmyk' | 'ycck' | 'unknown';
  progressive: boolean;
}

export interface RawImage {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
}

/**
 * nearest: OpenCV's INTER_NEAREST. area: OpenCV's INTER_AREA when shrinking (exact footprint
 * averages, bit for bit), linear when enlarging. linear, cubic (Keys, a = -0.75), lanczos4:
 * stretched over the footprint when shrinking, so the result is antialiased (OpenCV's are not).
 * opencv-lanczos4: OpenCV's INTER_LANCZOS4 bit for bit (8 fixed taps, not antialiased).
 */
export type ResampleKernel = 'nearest' | 'linear' | 'cubic' | 'area' | 'lanczos4' | 'opencv-lanczos4';

/** Resize, then crop or pad, then encode: each step optional. */
export interface ImageOp {
  /** JPEG input only: decode scaled by 1/denom in the DCT domain, far cheaper than in full. */
  denom?: 1 | 2 | 4 | 8;
  /** EXIF orientation 1-8: the decoded pixels are turned upright before the resize (sizes below are upright). */
  orientation?: number;
  resizeWidth?: number;
  resizeHeight?: number;
  kernel?: ResampleKernel;
  crop?: { left: number; top: number; width: number; height: number } | null;
  pad?: { top: number; bottom: number; left: number; right: number } | null;
  /** 0-255, default 255 (white). */
  padValue?: number;
  /** 1-100: JPEG out (baseline, 4:2:0, standard Huffman tables: OpenCV's imencode defaults); 0 or absent: raw pixels. */
  quality?: number;
}

export interface ImageOps {
  /** Throws on anything libjpeg cannot parse as a JPEG header. */
  readHeader(input: Buffer): JpegHeader;
  /** JPEG in (decoded to RGB); corrupt or truncated data keeps what decoded, as browsers do. */
  transformJpeg(input: Buffer, op: ImageOp): Promise<RawImage>;
  /**
   * PNG (bit depth 8 or less) or still WebP in, decoded to RGB by libspng / libwebp with the pixels
   * libvips gives (alpha flattened on white); rejects 16-bit samples, ICC profiles, EXIF, animation
   * and data those libraries refuse, which are libvips' to decode.
   */
  transformPngOrWebp(input: Buffer, op: ImageOp): Promise<RawImage>;
  transformRaw(pixels: Buffer, width: number, height: number, channels: number, op: ImageOp): Promise<RawImage>;
  /**
   * Synchronous RGB decode at 1/denom, for tests and tools. With ownRefinement (what transformJpeg
   * does), a progressive file's refinement scans are decoded by the addon instead of libjpeg, with the
   * same pixels; refinedHere says whether that path was taken (it falls back to libjpeg on odd data).
   */
  decodeJpeg(input: Buffer, denom: 1 | 2 | 4 | 8, ownRefinement: boolean): { data: Buffer; width: number; height: number; refinedHere: boolean };
  libjpegVersion: number;
  /** glibc only: returns the free pages of malloc's arenas to the system (false elsewhere, or when none were). */
  trimHeap(): boolean;
}

let cached: { ops: ImageOps | null; reason: string | null } | undefined;

/** The addon, or null (with the reason) when it is not built here. */
export function loadImageOps(): { ops: ImageOps | null; reason: string | null } {
  if (!cached) {
    const r = loadAddon<ImageOps>('image_ops');
    cached = { ops: r.addon, reason: r.reason };
  }
  return cached;
}

/**
 * Trims malloc's free pages every `everyMs` while the process runs (a no-op without the addon):
 * freed decode buffers otherwise stay in the process's RSS. Returns a function that stops it.
 */
export function startHeapTrimmer(everyMs = 2000): () => void {
  const { ops } = loadImageOps();
  if (!ops) return () => {};
  const timer = setInterval(() => ops.trimHeap(), everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

export function isJpeg(b: Buffer): boolean {
  return b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}

/**
 * The largest DCT scale-down (1, 2, 4 or 8) that keeps the image at least the given size, so the
 * resize after it still only shrinks. libjpeg rounds scaled sizes up.
 */
export function dctScaleDenom(width: number, height: number, minWidth: number, minHeight: number): 1 | 2 | 4 | 8 {
  for (const d of [8, 4, 2] as const) {
    if (Math.ceil(width / d) >= minWidth && Math.ceil(height / d) >= minHeight) return d;
  }
  return 1;
}

export interface JpegMarkers {
  /** EXIF orientation 1-8 (1 when absent or unreadable). */
  orientation: number;
  hasIccProfile: boolean;
  /** The embedded profile describes sRGB (its primaries and tone curves), so decoding may ignore it. */
  iccIsSrgb: boolean;
}

const EXIF_ID = Buffer.from('Exif\0\0', 'latin1');
const ICC_ID = Buffer.from('ICC_PROFILE\0', 'latin1');

/** Walks the marker segments before the first scan; stops early at anything malformed. */
export function readJpegMarkers(b: Buffer): JpegMarkers {
  const found: JpegMarkers = { orientation: 1, hasIccProfile: false, iccIsSrgb: false };
  const iccChunks: Array<[number, Buffer]> = [];
  let i = 2;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) break;
    const marker = b[i + 1]!;
    if (marker === 0xff) {
      i++;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break;
    const len = b.readUInt16BE(i + 2);
    const start = i + 4;
    const end = i + 2 + len;
    if (len < 2 || end > b.length) break;
    if (marker === 0xe1 && end - start > 6 && b.subarray(start, start + 6).equals(EXIF_ID)) {
      found.orientation = exifOrientation(b.subarray(start + 6, end));
    } else if (marker === 0xe2 && end - start > 14 && b.subarray(start, start + 12).equals(ICC_ID)) {
      found.hasIccProfile = true;
      // Byte 12 numbers the chunk (a profile over 64 kB spans several APP2 segments).
      iccChunks.push([b[start + 12]!, b.subarray(start + 14, end)]);
    }
    i = end;
  }
  if (iccChunks.length > 0) {
    found.iccIsSrgb = iccDescribesSrgb(Buffer.concat(iccChunks.sort((x, y) => x[0] - y[0]).map(([, chunk]) => chunk)));
  }
  return found;
}

// sRGB's primaries adapted to D50, as ICC profiles store them in rXYZ / gXYZ / bXYZ.
const SRGB_PRIMARIES: Record<string, readonly [number, number, number]> = {
  rXYZ: [0.4361, 0.2225, 0.0139],
  gXYZ: [0.3851, 0.7169, 0.0971],
  bXYZ: [0.1431, 0.0606, 0.7141],
};

/**
 * True for an RGB matrix/TRC profile with sRGB's primaries (within 0.01) and gamma-like tone curves
 * (a sampled curve, a parametric one or a gamma of 2.0-2.6): the sRGB profiles cameras, phones and
 * image editors embed. Colour management with such a profile changes pixels by rounding only, so they
 * are decoded as sRGB, as OpenCV (img2dataset) decodes every JPEG. Display P3, Adobe RGB and the rest
 * are not sRGB: libvips converts those.
 */
export function iccDescribesSrgb(p: Buffer): boolean {
  if (p.length < 132 || p.toString('latin1', 16, 20) !== 'RGB ') return false;
  const tags = new Map<string, { offset: number; size: number }>();
  const count = p.readUInt32BE(128);
  for (let k = 0; k < count && 132 + 12 * (k + 1) <= p.length; k++) {
    const e = 132 + 12 * k;
    tags.set(p.toString('latin1', e, e + 4), { offset: p.readUInt32BE(e + 4), size: p.readUInt32BE(e + 8) });
  }
  const s15 = (o: number): number => p.readInt32BE(o) / 65536;
  for (const [sig, want] of Object.entries(SRGB_PRIMARIES)) {
    const t = tags.get(sig);
    if (!t || t.offset + 20 > p.length || p.toString('latin1', t.offset, t.offset + 4) !== 'XYZ ') return false;
    for (let c = 0; c < 3; c++) if (Math.abs(s15(t.offset + 8 + 4 * c) - want[c]!) > 0.01) return false;
  }
  for (const sig of ['rTRC', 'gTRC', 'bTRC']) {
    const t = tags.get(sig);
    if (!t || t.offset + 12 > p.length) return false;
    const type = p.toString('latin1', t.offset, t.offset + 4);
    let gamma: number | null = null;
    if (type === 'curv') {
      const n = p.readUInt32BE(t.offset + 8);
      if (n === 0) return false; // linear
      if (n === 1) gamma = p.readUInt16BE(t.offset + 12) / 256;
    } else if (type === 'para') {
      if (t.offset + 16 > p.length) return false;
      gamma = s15(t.offset + 12);
    } else {
      return false;
    }
    if (gamma !== null && (gamma < 2.0 || gamma > 2.6)) return false;
  }
  return true;
}

function exifOrientation(tiff: Buffer): number {
  if (tiff.length < 8) return 1;
  const order = tiff.toString('latin1', 0, 2);
  if (order !== 'II' && order !== 'MM') return 1;
  const le = order === 'II';
  const u16 = (o: number): number => (le ? tiff.readUInt16LE(o) : tiff.readUInt16BE(o));
  const u32 = (o: number): number => (le ? tiff.readUInt32LE(o) : tiff.readUInt32BE(o));
  const ifd = u32(4);
  if (ifd + 2 > tiff.length) return 1;
  const count = u16(ifd);
  for (let k = 0; k < count; k++) {
    const e = ifd + 2 + k * 12;
    if (e + 12 > tiff.length) return 1;
    if (u16(e) === 0x0112) {
      const v = u16(e + 8);
      return v >= 1 && v <= 8 ? v : 1;
    }
  }
  return 1;
}
