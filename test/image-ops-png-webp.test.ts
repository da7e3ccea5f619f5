// The addon's PNG / WebP decode must give libvips' pixels (the resizer used to decode these with
// sharp, and --resize_engine exact promises the same bytes as before), and its header reader the
// sizes and alpha libvips reports; what it cannot match goes back to libvips.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import zlib from 'node:zlib';
import sharp from 'sharp';
import { oneBitGreyPng, pngChunk } from '../demo/faults.ts';
import { loadImageOps, type ImageOps } from '../lib/image-ops/index.ts';
import { readPngOrWebpHeader } from '../lib/image-ops/png-webp-header.ts';
import { createResizer, DEFAULT_RESIZER_OPTIONS } from '../download_images/resizer.ts';

const loaded = loadImageOps();
const ops = loaded.ops as ImageOps;
const built = { skip: !loaded.ops && `addon not built: ${loaded.reason}` };

const W = 97;
const H = 61;
/** RGBA noise whose alpha runs through every value. */
const rgba = Buffer.alloc(W * H * 4);
for (let i = 0; i < rgba.length; i++) rgba[i] = (i * 7919 + (i >> 3) * 31) % 256;
const withAlpha = () => sharp(rgba, { raw: { width: W, height: H, channels: 4 } });
const opaque = () => withAlpha().removeAlpha();

/** Inserts a chunk right after IHDR. */
const withChunk = (png: Buffer, type: string, body: Buffer) => Buffer.concat([png.subarray(0, 33), pngChunk(type, body), png.subarray(33)]);

/** A 1-bit greyscale PNG (sharp writes none): a checkerboard of 8 x 8 blocks. */
function oneBitGrey(): Buffer {
  const stride = Math.ceil(W / 8);
  const rows = Buffer.alloc((stride + 1) * H);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) if (((x >> 3) + (y >> 3)) % 2 === 0) rows[y * (stride + 1) + 1 + (x >> 3)]! |= 0x80 >> (x & 7);
  }
  return oneBitGreyPng(W, H, zlib.deflateSync(rows));
}

function riffChunk(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.write(type, 0, 'latin1');
  head.writeUInt32LE(body.length, 4);
  return Buffer.concat([head, body, Buffer.alloc(body.length % 2)]);
}
/** A one-frame animation (VP8X + ANIM + ANMF) around a still lossy WebP's VP8 chunk (sharp writes none here). */
function animatedWebp(still: Buffer): Buffer {
  const vp8x = Buffer.alloc(10);
  vp8x[0] = 0x02; // animation
  vp8x.writeUIntLE(W - 1, 4, 3);
  vp8x.writeUIntLE(H - 1, 7, 3);
  const frame = Buffer.alloc(16);
  frame.writeUIntLE(W - 1, 6, 3);
  frame.writeUIntLE(H - 1, 9, 3);
  frame.writeUIntLE(100, 12, 3);
  const body = Buffer.concat([Buffer.from('WEBP'), riffChunk('VP8X', vp8x), riffChunk('ANIM', Buffer.alloc(6)), riffChunk('ANMF', Buffer.concat([frame, still.subarray(12)]))]);
  return Buffer.concat([Buffer.from('RIFF'), Buffer.from(Uint32Array.of(body.length).buffer), body]);
}

const NATIVE: [string, () => Promise<Buffer>][] = [
  ['PNG RGB', () => opaque().png().toBuffer()],
  ['PNG RGBA', () => withAlpha().png().toBuffer()],
  ['PNG grey', () => opaque().greyscale().png().toBuffer()],
  ['PNG grey + alpha', () => withAlpha().greyscale().png().toBuffer()],
  ['PNG 1-bit grey', async () => oneBitGrey()],
  ['PNG palette', () => opaque().png({ palette: true }).toBuffer()],
  ['PNG palette + tRNS', () => withAlpha().png({ palette: true }).toBuffer()],
  ['PNG 2-colour palette', () => opaque().png({ palette: true, colours: 2 }).toBuffer()],
  ['PNG interlaced', () => opaque().png({ progressive: true }).toBuffer()],
  ['PNG with gAMA 1/2.2', async () => withChunk(await opaque().png().toBuffer(), 'gAMA', Buffer.from([0, 0, 0xb1, 0x8f]))],
  ['WebP lossy', () => opaque().webp({ quality: 80 }).toBuffer()],
  ['WebP lossy + alpha', () => withAlpha().webp({ quality: 80 }).toBuffer()],
  ['WebP lossless', () => opaque().webp({ lossless: true }).toBuffer()],
  ['WebP lossless + alpha', () => withAlpha().webp({ lossless: true }).toBuffer()],
];

/** What the resizer did with every PNG / WebP before: libvips decodes, flattens on white, sRGB. */
async function libvipsPixels(file: Buffer) {
  const meta = await sharp(file).metadata();
  let img = sharp(file, { failOn: 'none' }).autoOrient();
  if (meta.hasAlpha) img = img.flatten({ background: { r: 255, g: 255, b: 255 } });
  return { meta, ...(await img.toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true })) };
}

for (const [name, make] of NATIVE) {
  test(`${name}: the addon decodes libvips' pixels, and the header reader its sizes and alpha`, built, async () => {
    const file = await make();
    const ref = await libvipsPixels(file);
    const header = readPngOrWebpHeader(file);
    assert.deepEqual(header && { width: header.width, height: header.height, hasAlpha: header.hasAlpha }, {
      width: ref.meta.width,
      height: ref.meta.height,
      hasAlpha: ref.meta.hasAlpha,
    });
    const native = await ops.transformPngOrWebp(file, {});
    assert.deepEqual([native.width, native.height, native.channels], [ref.info.width, ref.info.height, 3]);
    assert.ok(native.data.equals(ref.data), 'same pixels as libvips');
    // And through a resize + pad + JPEG encode, the same bytes as libvips' decode fed to the resampler.
    const op = { resizeWidth: 50, resizeHeight: 31, kernel: 'area' as const, pad: { top: 9, bottom: 10, left: 0, right: 0 }, quality: 90 };
    const viaLibvips = await ops.transformRaw(ref.data, ref.info.width, ref.info.height, 3, op);
    assert.ok((await ops.transformPngOrWebp(file, op)).data.equals(viaLibvips.data));
  });
}

test('what libvips must decode is left to it: 16-bit, ICC profile, EXIF, animation, broken data', built, async () => {
  const png = await opaque().png().toBuffer();
  const leftToLibvips: [string, Buffer][] = [
    ['16-bit PNG', await opaque().toColourspace('rgb16').png().toBuffer()],
    ['PNG with iCCP', withChunk(png, 'iCCP', Buffer.concat([Buffer.from('p\0\0', 'latin1'), zlib.deflateSync(Buffer.alloc(128))]))],
    ['PNG with eXIf', withChunk(png, 'eXIf', Buffer.from('MM\0*\0\0\0\x08\0\0', 'latin1'))],
    ['WebP with EXIF', await opaque().webp().withMetadata({ orientation: 6 }).toBuffer()],
    ['animated WebP', animatedWebp(await opaque().webp().toBuffer())],
  ];
  for (const [name, file] of leftToLibvips) {
    assert.equal(readPngOrWebpHeader(file), null, `${name}: header left to libvips`);
    if (name === '16-bit PNG') continue;
    await assert.rejects(ops.transformPngOrWebp(file, {}), /ICC|EXIF|animated/, name);
  }
  await assert.rejects(ops.transformPngOrWebp(await opaque().toColourspace('rgb16').png().toBuffer(), {}), /16-bit/);
  await assert.rejects(ops.transformPngOrWebp(png.subarray(0, png.length - 200), {}), /PNG decode/, 'truncated PNG');
  await assert.rejects(ops.transformPngOrWebp(Buffer.from('RIFF\0\0\0\0WEBPVP8 garbage'), {}), /WebP/);
  await assert.rejects(ops.transformPngOrWebp(Buffer.from('GIF89a'), {}), /neither PNG nor WebP/);
});

test('the resizer still turns a truncated PNG into what libvips recovers, and an EXIF-rotated WebP upright', built, async () => {
  const resize = createResizer({ ...DEFAULT_RESIZER_OPTIONS, imageSize: 64, resizeMode: 'border', encodeFormat: 'png', encodeQuality: 1 });
  const png = await opaque().png().toBuffer();
  const truncated = png.subarray(0, png.length - 200);
  const r = await resize(truncated);
  assert.equal(r.error, null, 'libvips decodes what it can, as before');
  const rotated = await resize(await opaque().webp().withMetadata({ orientation: 6 }).toBuffer());
  assert.deepEqual([rotated.originalWidth, rotated.originalHeight], [H, W], 'orientation 6 swaps the sizes');
});
