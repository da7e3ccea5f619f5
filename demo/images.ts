// Deterministic images for the demo crawl host, the tests and the benchmark corpus: one coloured
// shape (circle, square, triangle, star: the tiny CLIP model's words) on a light background, as
// photo-like JPEGs (soft edges + grain, so file sizes look like the web's), illustration-like PNGs,
// WebPs and GIFs, with the awkward cases a crawl meets (EXIF-rotated, greyscale, CMYK, alpha,
// animated, tiny, huge). The format is chosen by the image number, not by the URL's extension.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import type { RouteHandler } from './crawl-host.ts';
import { serveFile } from './crawl-host.ts';
import { Rng } from '../lib/random.ts';
import { insideShape, TINY_COLOURS, TINY_SHAPES, type TinyShape } from './tiny-clip.ts';

export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif';

export interface ImageSpec {
  n: number;
  seed: number;
  format: ImageFormat;
  /** Displayed size, i.e. after the EXIF orientation is applied. */
  width: number;
  height: number;
  /** EXIF orientation tag written into the file (1 = none written). */
  orientation: number;
  exifRotated: boolean;
  greyscale: boolean;
  cmyk: boolean;
  alpha: boolean;
  animated: boolean;
  /** Encoder quality (JPEG/WebP) as sites use them. */
  quality: number;
  /** Camera-style EXIF fields (JPEG only), so EXIF extraction has something to read. */
  exif: boolean;
}

export const CONTENT_TYPES: Record<ImageFormat, string> = {
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
  gif: 'image/gif',
};

export const EXTENSIONS: Record<ImageFormat, string> = { jpeg: 'jpg', png: 'png', webp: 'webp', gif: 'gif' };

/** Largest image number the route answers; anything above is a 404 like any unknown path. */
export const MAX_IMAGE_NUMBER = 1_000_000_000;

function sizeFor(rng: Rng, format: ImageFormat): [number, number] {
  const roll = rng.next();
  let long: number;
  if (roll < 0.03) long = rng.int(16, 64);
  else if (roll < 0.05) long = rng.int(2000, 4000);
  else long = rng.int(320, 1600);
  // Animated GIFs on the web are small; keep them cheap to render too.
  if (format === 'gif') long = Math.min(long, 640);
  const aspect = rng.pick([1, 4 / 3, 3 / 2, 16 / 9, 5 / 4, 2, 3]);
  const short = Math.max(16, Math.round(long / aspect));
  return rng.chance(0.65) ? [long, short] : [short, long];
}

/** The image behind `/images/<n>.*`: the same spec for the same (n, seed), always. */
export function imageSpecFor(n: number, seed = 0): ImageSpec {
  const rng = new Rng(seed).fork(`image-${n}`);
  const roll = rng.next();
  const format: ImageFormat = roll < 0.75 ? 'jpeg' : roll < 0.87 ? 'png' : roll < 0.95 ? 'webp' : 'gif';
  const [width, height] = sizeFor(rng, format);
  const spec: ImageSpec = {
    n,
    seed,
    format,
    width,
    height,
    orientation: 1,
    exifRotated: false,
    greyscale: false,
    cmyk: false,
    alpha: false,
    animated: false,
    quality: rng.int(70, 95),
    exif: false,
  };
  if (format === 'jpeg') {
    const kind = rng.next();
    if (kind < 0.08) {
      spec.exifRotated = true;
      spec.orientation = rng.pick([6, 8, 3]);
    } else if (kind < 0.13) spec.greyscale = true;
    else if (kind < 0.16) spec.cmyk = true;
    spec.exif = spec.exifRotated || rng.chance(0.2);
  } else if (format === 'png') {
    spec.alpha = rng.chance(0.4);
    spec.greyscale = !spec.alpha && rng.chance(0.15);
  } else if (format === 'webp') {
    spec.alpha = rng.chance(0.2);
  } else {
    spec.animated = rng.chance(0.5);
  }
  return spec;
}

/** A spec for a given kind of image, e.g. in tests: `customSpec({format: 'png', alpha: true})`. */
export function customSpec(over: Partial<ImageSpec> & { width: number; height: number }): ImageSpec {
  const orientation = over.orientation ?? 1;
  return {
    n: 0,
    seed: 0,
    format: 'jpeg',
    orientation,
    exifRotated: orientation !== 1,
    greyscale: false,
    cmyk: false,
    alpha: false,
    animated: false,
    quality: 90,
    exif: orientation !== 1,
    ...over,
  };
}

// Shared grain: one 256x256 tile of seeded, signed noise (fixed size, built once), tiled over
// photo-like images. Noise is partly coarse (2x2 blocks) like texture, partly per pixel like sensor noise.
const GRAIN = 256;
let grainTile: Int8Array | null = null;
function grain(): Int8Array {
  if (!grainTile) {
    const rng = new Rng(0x6a1);
    const coarse = new Float64Array((GRAIN / 2) * (GRAIN / 2));
    for (let i = 0; i < coarse.length; i++) coarse[i] = (rng.next() + rng.next() + rng.next() - 1.5) * 16;
    const t = new Int8Array(GRAIN * GRAIN * 3);
    for (let y = 0; y < GRAIN; y++) {
      for (let x = 0; x < GRAIN; x++) {
        const c = coarse[(y >> 1) * (GRAIN / 2) + (x >> 1)];
        const i = (y * GRAIN + x) * 3;
        for (let k = 0; k < 3; k++) t[i + k] = Math.max(-127, Math.min(127, Math.round(c + (rng.next() - 0.5) * 6)));
      }
    }
    grainTile = t;
  }
  return grainTile;
}

function addGrain(px: Buffer, width: number, height: number): void {
  const g = grain();
  for (let y = 0; y < height; y++) {
    const gRow = (y & (GRAIN - 1)) * GRAIN * 3;
    let i = y * width * 3;
    for (let x = 0; x < width; x++) {
      const gi = gRow + (x & (GRAIN - 1)) * 3;
      for (let k = 0; k < 3; k++, i++) {
        const v = px[i] + g[gi + k];
        px[i] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
}

const clamp8 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v | 0);

// ---- What each picture shows: one coloured shape on a light background.

/** The colours the demo draws (white is only ever the background). */
export const DRAWN_COLOURS = Object.keys(TINY_COLOURS).filter((c) => c !== 'white');

/** Light backgrounds, as alt text would name them. */
export const BACKGROUNDS: ReadonlyArray<{ name: string; rgb: readonly [number, number, number] }> = [
  { name: 'white', rgb: [255, 255, 255] },
  { name: 'white', rgb: [250, 250, 247] },
  { name: 'light grey', rgb: [240, 240, 240] },
  { name: 'cream', rgb: [250, 243, 224] },
  { name: 'pale blue', rgb: [230, 240, 252] },
  { name: 'pale pink', rgb: [252, 234, 238] },
];

export interface ShapeContent {
  colour: string;
  shape: TinyShape;
  /** The fill as drawn, 0..255 (the named colour, slightly off as real pictures are). */
  rgb: [number, number, number];
  background: string;
  backgroundRgb: readonly [number, number, number];
  /** Circumradius over the image's shorter side. */
  size: number;
  /** Centre offset from the image centre, over the shorter side. */
  dx: number;
  dy: number;
  /** Radians, clockwise. */
  rotation: number;
}

/**
 * What `/images/<n>.*` shows, for (n, seed): drawn on the image's centred square (the part a CLIP
 * centre crop keeps), at most 0.42 of its side from the centre, so the shape survives the
 * pipeline's resize and crop whatever the aspect ratio.
 */
export function shapeContentFor(n: number, seed = 0): ShapeContent {
  const rng = new Rng(seed).fork(`content-${n}`);
  const colour = rng.pick(DRAWN_COLOURS);
  const shape = rng.pick(TINY_SHAPES);
  const rgb = TINY_COLOURS[colour]!.map((v) => (v ? rng.int(215, 255) : rng.int(0, 40))) as [number, number, number];
  const bg = rng.pick(BACKGROUNDS);
  const size = 0.3 + rng.next() * 0.08;
  const room = 0.42 - size;
  return {
    colour,
    shape,
    rgb,
    background: bg.name,
    backgroundRgb: bg.rgb,
    size,
    dx: (rng.next() * 2 - 1) * room,
    dy: (rng.next() * 2 - 1) * room,
    rotation: (rng.next() * 2 - 1) * 0.2,
  };
}

/** Colours that sharp's sRGB -> CMYK -> sRGB round trip moves to another hue (green turns yellow-green). */
const CMYK_SHIFTED = new Set(['green', 'cyan', 'magenta']);

/**
 * The colour a viewer sees in the served picture, or null where no colour word fits: a greyscale
 * rendering turns dark shapes black and the others grey, a CMYK one shifts some hues. Tests use
 * this as caption-independent ground truth.
 */
export function visibleColour(spec: ImageSpec, content: ShapeContent = shapeContentFor(spec.n, spec.seed)): string | null {
  if (spec.greyscale) {
    const [r, g, b] = content.rgb;
    return 0.299 * r + 0.587 * g + 0.114 * b < 64 ? 'black' : null;
  }
  if (spec.cmyk && CMYK_SHIFTED.has(content.colour)) return null;
  return content.colour;
}

/** Circumradius in pixels below which a drawn shape is a blob: a 10 px wide star and square look alike. */
const SMALLEST_READABLE_RADIUS = 5;

/** The shape a viewer can make out in the served picture, or null where it is drawn too small to tell. */
export function visibleShape(spec: ImageSpec, content: ShapeContent = shapeContentFor(spec.n, spec.seed)): TinyShape | null {
  return content.size * Math.min(spec.width, spec.height) < SMALLEST_READABLE_RADIUS ? null : content.shape;
}

/** The shape on a background gradient, at w x h (supersampled edges, shaded like a lit surface). */
function renderShape(content: ShapeContent, w: number, h: number, frame: number): Buffer {
  const px = Buffer.alloc(w * h * 3);
  const short = Math.min(w, h);
  const radius = content.size * short;
  // Animated frames drift sideways a little.
  const cx = w / 2 + (content.dx + frame * 0.015) * short;
  const cy = h / 2 + content.dy * short;
  const cos = Math.cos(content.rotation);
  const sin = Math.sin(content.rotation);
  const bg = content.backgroundRgb;
  for (let y = 0; y < h; y++) {
    // A soft vertical gradient, lighter at the top.
    const light = 1.01 - 0.03 * (y / Math.max(1, h - 1));
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      for (let c = 0; c < 3; c++) px[i + c] = clamp8(bg[c]! * light);
    }
  }
  const SUB = 3;
  const y0 = Math.max(0, Math.floor(cy - radius - 1));
  const y1 = Math.min(h, Math.ceil(cy + radius + 1));
  const x0 = Math.max(0, Math.floor(cx - radius - 1));
  const x1 = Math.min(w, Math.ceil(cx + radius + 1));
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      let covered = 0;
      let ly = 0;
      for (let sy = 0; sy < SUB; sy++) {
        for (let sx = 0; sx < SUB; sx++) {
          const ox = (x + (sx + 0.5) / SUB - cx) / radius;
          const oy = (y + (sy + 0.5) / SUB - cy) / radius;
          // Into the shape's own frame (rotated back).
          const u = ox * cos + oy * sin;
          const v = -ox * sin + oy * cos;
          if (insideShape(content.shape, u, v)) {
            covered++;
            ly += v;
          }
        }
      }
      if (!covered) continue;
      const a = covered / (SUB * SUB);
      // Lit from above: up to 12% darker towards the bottom.
      const shade = 1 - 0.06 * (1 + ly / covered);
      const i = (y * w + x) * 3;
      for (let c = 0; c < 3; c++) px[i + c] = clamp8(px[i + c]! * (1 - a) + content.rgb[c]! * shade * a);
    }
  }
  return px;
}

/** Side of the rendered scene, before libvips scales it to the image size (soft edges, cheap). */
function sceneSize(width: number, height: number): [number, number] {
  const k = Math.min(1, Math.max(1 / 8, 96 / Math.min(width, height)));
  return [Math.max(4, Math.round(width * k)), Math.max(4, Math.round(height * k))];
}

/** Upright RGB pixels at the displayed size (grain for photo-like formats). */
async function renderRgb(spec: ImageSpec, frame: number): Promise<Buffer> {
  // The scene is smooth, so render it small and let libvips upscale it; detail comes from grain.
  const [sw, sh] = sceneSize(spec.width, spec.height);
  const scene = renderShape(shapeContentFor(spec.n, spec.seed), sw, sh, frame);
  const px =
    sw === spec.width && sh === spec.height
      ? scene
      : await sharp(scene, { raw: { width: sw, height: sh, channels: 3 } }).resize(spec.width, spec.height, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
  if (spec.format === 'jpeg' || spec.format === 'webp') addGrain(px, spec.width, spec.height);
  return px;
}

/** Alpha plane: opaque, fading to transparent over a margin along the edges (the shape stays opaque). */
async function renderAlpha(spec: ImageSpec): Promise<Buffer> {
  const [w, h] = sceneSize(spec.width, spec.height);
  const margin = 0.06 * Math.min(w, h);
  const a = Buffer.alloc(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const edge = Math.min(x + 0.5, w - x - 0.5, y + 0.5, h - y - 0.5);
      a[y * w + x] = clamp8(255 * Math.min(1, edge / margin));
    }
  }
  if (w === spec.width && h === spec.height) return a;
  return sharp(a, { raw: { width: w, height: h, channels: 1 } }).resize(spec.width, spec.height, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
}

/** Rotation (then flip) that stores upright pixels so that applying `orientation` restores them. */
function storeTransform(orientation: number): { rotate: number; flop: boolean; flip: boolean } {
  switch (orientation) {
    case 2: return { rotate: 0, flop: true, flip: false };
    case 3: return { rotate: 180, flop: false, flip: false };
    case 4: return { rotate: 0, flop: false, flip: true };
    case 6: return { rotate: 270, flop: false, flip: false };
    case 8: return { rotate: 90, flop: false, flip: false };
    default: return { rotate: 0, flop: false, flip: false };
  }
}

const GIF_FRAMES = 3;

export async function renderImage(spec: ImageSpec): Promise<Buffer> {
  const { width, height } = spec;
  if (spec.format === 'gif') {
    const frames = spec.animated ? GIF_FRAMES : 1;
    const parts: Buffer[] = [];
    for (let f = 0; f < frames; f++) parts.push(await renderRgb(spec, f));
    return sharp(Buffer.concat(parts), { raw: { width, height: height * frames, channels: 3, pageHeight: height } })
      .gif({ loop: 0, delay: Array(frames).fill(200), effort: 1 })
      .toBuffer();
  }
  let img = sharp(await renderRgb(spec, 0), { raw: { width, height, channels: 3 } });
  let channels: 3 | 4 = 3;
  if (spec.alpha) {
    channels = 4;
    img = img.joinChannel(await renderAlpha(spec), {
      raw: { width, height, channels: 1 },
    });
  }
  if (spec.orientation !== 1) {
    // Store the pixels so that applying the orientation tag shows them upright again.
    const t = storeTransform(spec.orientation);
    const upright = await img.raw().toBuffer();
    img = sharp(upright, { raw: { width, height, channels } });
    if (t.rotate) img = img.rotate(t.rotate);
    if (t.flop) img = img.flop();
    if (t.flip) img = img.flip();
  }
  if (spec.greyscale) img = img.toColourspace('b-w');
  if (spec.cmyk) img = img.toColourspace('cmyk');
  switch (spec.format) {
    case 'jpeg': {
      if (spec.exif) {
        img = img.withExif({
          IFD0: { Make: 'cah-demo', Model: `Camera ${spec.n % 7}`, DateTime: '2021:08:18 12:00:00' },
        });
      }
      if (spec.orientation !== 1) img = img.withMetadata({ orientation: spec.orientation });
      return img.jpeg({ quality: spec.quality, progressive: spec.n % 5 === 0, mozjpeg: false }).toBuffer();
    }
    case 'png':
      return img.png({ compressionLevel: 6 }).toBuffer();
    case 'webp':
      return img.webp({ quality: spec.quality, effort: 1 }).toBuffer();
  }
}

export interface ImagesRouteOptions {
  seed?: number;
  /** Rendered images kept in memory (least recently used evicted). */
  cacheSize?: number;
  /** Called with the body bytes of each response, e.g. to count traffic. */
  onBytes?: (n: number) => void;
}

/** Serves GET/HEAD `/images/<n>.<any extension>` for `host.addRoute('/images/', ...)`. */
export function imagesRoute(opts: ImagesRouteOptions = {}): RouteHandler {
  const seed = opts.seed ?? 0;
  const cacheSize = Math.max(0, opts.cacheSize ?? 256);
  // Map iteration order is insertion order: delete + set moves an entry to the young end.
  const cache = new Map<number, Promise<Buffer>>();
  const get = (n: number, spec: ImageSpec): Promise<Buffer> => {
    const hit = cache.get(n);
    if (hit) {
      cache.delete(n);
      cache.set(n, hit);
      return hit;
    }
    const p = renderImage(spec);
    if (cacheSize > 0) {
      cache.set(n, p);
      p.catch(() => cache.delete(n));
      while (cache.size > cacheSize) cache.delete(cache.keys().next().value as number);
    }
    return p;
  };
  return async (req, res, url) => {
    const m = /^\/images\/(\d{1,10})(?:\.[A-Za-z0-9]{1,5})?$/.exec(decodeURIComponent(url.pathname));
    const n = m ? Number(m[1]) : NaN;
    if ((req.method !== 'GET' && req.method !== 'HEAD') || !Number.isSafeInteger(n) || n > MAX_IMAGE_NUMBER) {
      res.writeHead(req.method === 'GET' || req.method === 'HEAD' ? 404 : 405, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    const spec = imageSpecFor(n, seed);
    const body = await get(n, spec);
    await serveFile(req, res, body, { contentType: CONTENT_TYPES[spec.format], count: opts.onBytes ?? (() => {}) });
  };
}

export interface CorpusOptions {
  seed?: number;
  minSide?: number;
  maxSide?: number;
  /** Images rendered at once (sharp work runs on libuv's pool). */
  concurrency?: number;
  onProgress?: (done: number) => void;
}

export interface CorpusSummary {
  files: number;
  bytes: number;
  seconds: number;
}

/** Writes `<dir>/<i>.jpg` for i < count: photo-like JPEGs with sides in [minSide, maxSide]. */
export async function writeImageCorpus(dir: string, count: number, opts: CorpusOptions = {}): Promise<CorpusSummary> {
  const seed = opts.seed ?? 0;
  const minSide = opts.minSide ?? 320;
  const maxSide = opts.maxSide ?? 1600;
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  await mkdir(dir, { recursive: true });
  const started = performance.now();
  let next = 0;
  let done = 0;
  let bytes = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const rng = new Rng(seed).fork(`corpus-${i}`);
      const spec = customSpec({
        n: i,
        seed,
        format: 'jpeg',
        width: rng.int(minSide, maxSide),
        height: rng.int(minSide, maxSide),
        quality: rng.int(80, 95),
      });
      const buf = await renderImage(spec);
      await writeFile(join(dir, `${i}.jpg`), buf);
      bytes += buf.length;
      done++;
      opts.onProgress?.(done);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { files: count, bytes, seconds: (performance.now() - started) / 1000 };
}
