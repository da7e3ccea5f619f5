// The `laion-mix` benchmark corpus: real photographs and artworks, cut and scaled into LAION-400M's
// published size mix, in a web-like mix of encodings. Used by bench/download-images.ts.
//
// Sources: wallpaper packages of Debian 12 (bookworm), fetched with `apt-get download` (no install,
// no root needed) and unpacked with `dpkg-deb -x`: mate-backgrounds (nature photographs),
// ukui-wallpapers (photographs credited to their authors), lomiri-wallpapers-16.04 / -20.04 and
// plasma-workspace-wallpapers (photographs and digital paintings). Each package's licence is in its
// /usr/share/doc/<package>/copyright inside the unpacked tree. Only JPEG sources are used: the PNGs
// in these packages are flat vector art, far from what a web crawl holds.
//
// Sizes follow LAION-400M's counts over 413M samples: long side >= 256 px for 65%, >= 512 for 27%,
// >= 1024 for 6.3%. So 35% are under 256 px (enlarged by --image_size 256), 38% in 256-511, 20.7%
// in 512-1023 and 6.3% at 1024-2048. Within a band the long side is drawn log-uniformly; the aspect
// ratio from a mix of landscape, portrait and square shapes.
//
// Encodings (our assumption of a web mix; LAION publishes none): baseline 4:2:0 JPEG 66%,
// progressive JPEG 12%, 4:4:4 JPEG 6%, greyscale JPEG 3%, CMYK JPEG 1%, EXIF-rotated JPEG 4%,
// PNG 6%, WebP 2%; JPEG quality 70-95.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { Rng } from '../lib/random.ts';

export const PHOTO_PACKAGES = ['mate-backgrounds', 'ukui-wallpapers', 'lomiri-wallpapers-16.04', 'lomiri-wallpapers-20.04', 'plasma-workspace-wallpapers'];

export type SizeBand = '<256' | '256-511' | '>=512';

export function sizeBand(longSide: number): SizeBand {
  return longSide < 256 ? '<256' : longSide < 512 ? '256-511' : '>=512';
}

export interface CorpusImage {
  name: string;
  width: number;
  height: number;
  encoding: string;
  source: string;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Downloads and unpacks the packages once; returns the source JPEGs (the largest of each plasma wallpaper). */
export async function photoSources(dir: string): Promise<string[]> {
  const tree = join(dir, 'tree');
  if (!existsSync(join(dir, '.unpacked'))) {
    await mkdir(dir, { recursive: true });
    const dl = spawnSync('apt-get', ['download', ...PHOTO_PACKAGES], { cwd: dir, stdio: 'inherit' });
    if (dl.status !== 0) throw new Error(`apt-get download ${PHOTO_PACKAGES.join(' ')} failed in ${dir}: the laion-mix corpus needs Debian's package archive`);
    for (const deb of (await readdir(dir)).filter((n) => n.endsWith('.deb'))) {
      const x = spawnSync('dpkg-deb', ['-x', join(dir, deb), tree], { stdio: 'inherit' });
      if (x.status !== 0) throw new Error(`dpkg-deb -x ${deb} failed`);
    }
    await writeFile(join(dir, '.unpacked'), '');
  }
  const files = (await walk(tree)).filter((p) => /\.jpe?g$/i.test(p));
  const best = new Map<string, { path: string; size: number }>();
  for (const p of files) {
    const size = (await stat(p)).size;
    if (size < 100_000) continue;
    // Plasma ships one picture in several resolutions under <name>/contents/images/: keep the largest.
    const m = /\/wallpapers\/([^/]+)\/contents\/images\//.exec(p);
    if (/\/contents\/images_dark\//.test(p)) continue;
    const key = m ? `plasma:${m[1]}` : p;
    const prev = best.get(key);
    if (!prev || size > prev.size) best.set(key, { path: p, size });
  }
  return [...best.values()].map((b) => b.path).sort();
}

const BANDS: Array<[number, [number, number]]> = [
  // share, [smallest, largest] long side
  [0.35, [64, 255]],
  [0.38, [256, 511]],
  [0.207, [512, 1023]],
  [0.063, [1024, 2048]],
];
const ASPECTS: Array<[number, number]> = [
  // share, width / height
  [0.3, 4 / 3],
  [0.2, 3 / 2],
  [0.12, 16 / 9],
  [0.15, 1],
  [0.13, 3 / 4],
  [0.1, 2 / 3],
];
const ENCODINGS: Array<[number, string]> = [
  [0.66, 'jpeg'],
  [0.12, 'jpeg-progressive'],
  [0.06, 'jpeg-444'],
  [0.03, 'jpeg-grey'],
  [0.01, 'jpeg-cmyk'],
  [0.04, 'jpeg-exif-rotated'],
  [0.06, 'png'],
  [0.02, 'webp'],
];

function pickShare<T>(rng: Rng, table: Array<[number, T]>): T {
  let r = rng.next();
  for (const [share, v] of table) {
    if (r < share) return v;
    r -= share;
  }
  return table[table.length - 1]![1];
}

/** One corpus image: a random crop of a source, scaled to a drawn size, encoded as drawn. */
async function renderOne(sources: string[], sourceSizes: Map<string, [number, number]>, i: number, seed: number): Promise<{ bytes: Buffer; meta: CorpusImage }> {
  const rng = new Rng(seed).fork(`laion-mix-${i}`);
  const [lo, hi] = pickShare(rng, BANDS);
  const longSide = Math.min(hi, Math.round(Math.exp(Math.log(lo) + rng.next() * (Math.log(hi + 1) - Math.log(lo)))));
  const aspect = pickShare(rng, ASPECTS);
  const width = Math.max(8, Math.round(aspect >= 1 ? longSide : longSide * aspect));
  const height = Math.max(8, Math.round(aspect >= 1 ? longSide / aspect : longSide));
  const source = sources[rng.int(0, sources.length - 1)]!;
  const [sw, sh] = sourceSizes.get(source)!;
  // A crop of the source with the target's aspect, between the target size and the whole source.
  const maxScale = Math.min(sw / width, sh / height);
  const scale = Math.max(Math.min(1, maxScale), Math.min(maxScale, 1 + rng.next() * (maxScale - 1)));
  const cw = Math.min(sw, Math.max(1, Math.round(width * scale)));
  const ch = Math.min(sh, Math.max(1, Math.round(height * scale)));
  const left = rng.int(0, sw - cw);
  const top = rng.int(0, sh - ch);
  const encoding = pickShare(rng, ENCODINGS);
  const quality = rng.int(70, 95);
  let img = sharp(source).extract({ left, top, width: cw, height: ch }).resize(width, height, { fit: 'fill', kernel: 'lanczos3' });
  let ext = 'jpg';
  switch (encoding) {
    case 'jpeg-progressive':
      img = img.jpeg({ quality, progressive: true });
      break;
    case 'jpeg-444':
      img = img.jpeg({ quality, chromaSubsampling: '4:4:4' });
      break;
    case 'jpeg-grey':
      img = img.greyscale().jpeg({ quality });
      break;
    case 'jpeg-cmyk':
      img = img.toColourspace('cmyk').jpeg({ quality });
      break;
    case 'jpeg-exif-rotated':
      // Stored sideways with orientation 6 (rotate 90 clockwise to view), as phones write them.
      img = sharp(await img.rotate(-90).toBuffer()).withMetadata({ orientation: 6 }).jpeg({ quality });
      break;
    case 'png':
      img = img.png();
      ext = 'png';
      break;
    case 'webp':
      img = img.webp({ quality });
      ext = 'webp';
      break;
    default:
      img = img.jpeg({ quality });
  }
  const bytes = await img.toBuffer();
  return { bytes, meta: { name: `${i}.${ext}`, width, height, encoding, source: source.replace(/^.*\//, '') } };
}

/**
 * Renders `count` images into `dir` once (kept across runs; `index.json` lists them with their
 * displayed size and encoding), from sources unpacked under `debDir`.
 */
export async function laionMixCorpus(dir: string, debDir: string, count: number, seed = 0): Promise<CorpusImage[]> {
  const indexPath = join(dir, 'index.json');
  if (existsSync(indexPath)) {
    const have = JSON.parse(await readFile(indexPath, 'utf8')) as CorpusImage[];
    if (have.length >= count) return have.slice(0, count);
  }
  const originals = await photoSources(debDir);
  if (originals.length === 0) throw new Error(`no source photographs under ${debDir}`);
  // Sources above 2048 px are scaled down once (quality 95), so a render decodes ~4 MP, not 15.
  const scaledDir = join(debDir, 'scaled');
  await mkdir(scaledDir, { recursive: true });
  const sources: string[] = [];
  const sizes = new Map<string, [number, number]>();
  for (const [k, original] of originals.entries()) {
    const scaled = join(scaledDir, `${k}-${original.replace(/^.*\/usr\/share\//, '').replace(/[^\w.-]+/g, '_')}`);
    if (!existsSync(scaled)) {
      await sharp(original).resize(2048, 2048, { fit: 'inside', withoutEnlargement: true }).jpeg({ quality: 95 }).toFile(`${scaled}.tmp`);
      await rename(`${scaled}.tmp`, scaled);
    }
    const m = await sharp(scaled).metadata();
    sources.push(scaled);
    sizes.set(scaled, [m.width!, m.height!]);
  }
  process.stderr.write(`rendering ${count} laion-mix images from ${sources.length} photographs into ${dir} (once) ...\n`);
  await mkdir(dir, { recursive: true });
  const metas: CorpusImage[] = new Array(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const { bytes, meta } = await renderOne(sources, sizes, i, seed);
      const tmp = join(dir, `.tmp-${meta.name}`);
      await writeFile(tmp, bytes);
      await rename(tmp, join(dir, meta.name));
      metas[i] = meta;
    }
  };
  await Promise.all([worker(), worker()]);
  await writeFile(`${indexPath}.tmp`, JSON.stringify(metas));
  await rename(`${indexPath}.tmp`, indexPath);
  return metas;
}
