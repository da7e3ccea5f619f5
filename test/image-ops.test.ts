import assert from 'node:assert/strict';
import { test } from 'node:test';
import sharp from 'sharp';
import { dctScaleDenom, loadImageOps, readJpegMarkers, type ImageOps } from '../lib/image-ops/index.ts';

const loaded = loadImageOps();
const ops = loaded.ops as ImageOps;
const built = { skip: !loaded.ops && `addon not built: ${loaded.reason}` };

/** Deterministic pseudo-random RGB pixels. */
function noise(width: number, height: number, channels = 3, seed = 7): Buffer {
  const b = Buffer.alloc(width * height * channels);
  let s = seed;
  for (let i = 0; i < b.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

/** Exact INTER_AREA for one axis, written independently of the addon: overlap of each source pixel. */
function areaWeights(inSize: number, outSize: number, x: number): Map<number, number> {
  const scale = inSize / outSize;
  const a = x * scale;
  const b = (x + 1) * scale;
  const w = new Map<number, number>();
  for (let i = Math.floor(a); i < Math.ceil(b); i++) w.set(i, (Math.min(i + 1, b) - Math.max(i, a)) / scale);
  return w;
}

test('area shrink is the exact footprint average (integer and fractional factors)', built, async () => {
  for (const [w, h, ow, oh] of [
    [8, 6, 4, 3],
    [7, 5, 3, 2],
    [300, 200, 256, 171],
  ] as const) {
    const src = noise(w, h);
    const r = await ops.transformRaw(src, w, h, 3, { resizeWidth: ow, resizeHeight: oh, kernel: 'area' });
    assert.deepEqual([r.width, r.height, r.channels, r.data.length], [ow, oh, 3, ow * oh * 3]);
    let worst = 0;
    for (let y = 0; y < oh; y++) {
      const wy = areaWeights(h, oh, y);
      for (let x = 0; x < ow; x++) {
        const wx = areaWeights(w, ow, x);
        for (let c = 0; c < 3; c++) {
          let v = 0;
          for (const [sy, ky] of wy) for (const [sx, kx] of wx) v += ky * kx * src[(sy * w + sx) * 3 + c]!;
          worst = Math.max(worst, Math.abs(r.data[(y * ow + x) * 3 + c]! - v));
        }
      }
    }
    // Float rounding may move a value across .5 once in a while.
    assert.ok(worst <= 1, `${w}x${h} -> ${ow}x${oh}: off by ${worst}`);
  }
});

test('every kernel keeps a flat image flat and enlarges or shrinks to the asked size', built, async () => {
  const flat = Buffer.alloc(40 * 30 * 3);
  for (let i = 0; i < flat.length; i += 3) flat.set([200, 30, 40], i);
  for (const kernel of ['nearest', 'linear', 'cubic', 'area', 'lanczos4'] as const) {
    for (const [ow, oh] of [
      [13, 9],
      [97, 71],
    ]) {
      const r = await ops.transformRaw(flat, 40, 30, 3, { resizeWidth: ow, resizeHeight: oh, kernel });
      assert.deepEqual([r.width, r.height], [ow, oh], kernel);
      for (let i = 0; i < r.data.length; i += 3) assert.deepEqual([...r.data.subarray(i, i + 3)], [200, 30, 40], `${kernel} ${ow}x${oh} at ${i / 3}`);
    }
  }
});

test('nearest picks floor(x * scale) like OpenCV', built, async () => {
  const src = Buffer.from(Array.from({ length: 10 }, (_, i) => i * 10));
  const r = await ops.transformRaw(src, 10, 1, 1, { resizeWidth: 4, resizeHeight: 1, kernel: 'nearest' });
  assert.deepEqual([...r.data], [0, 20, 50, 70]);
});

test('pad puts the image at its offset on white; crop takes the window', built, async () => {
  const src = noise(5, 4);
  const padded = await ops.transformRaw(src, 5, 4, 3, { pad: { top: 1, bottom: 2, left: 3, right: 0 } });
  assert.deepEqual([padded.width, padded.height], [8, 7]);
  const px = (img: { data: Buffer; width: number }, x: number, y: number) => [...img.data.subarray((y * img.width + x) * 3, (y * img.width + x + 1) * 3)];
  assert.deepEqual(px(padded, 0, 0), [255, 255, 255]);
  assert.deepEqual(px(padded, 7, 6), [255, 255, 255]);
  assert.deepEqual(px(padded, 3, 1), [...src.subarray(0, 3)]);
  assert.deepEqual(px(padded, 7, 4), px({ data: src, width: 5 }, 4, 3));
  const cropped = await ops.transformRaw(src, 5, 4, 3, { crop: { left: 1, top: 2, width: 3, height: 2 } });
  assert.deepEqual([cropped.width, cropped.height], [3, 2]);
  assert.deepEqual(px(cropped, 0, 0), px({ data: src, width: 5 }, 1, 2));
  assert.deepEqual(px(cropped, 2, 1), px({ data: src, width: 5 }, 3, 3));
  await assert.rejects(ops.transformRaw(src, 5, 4, 3, { crop: { left: 3, top: 0, width: 3, height: 1 } }), /crop outside/);
});

test('JPEG in, DCT-scaled decode, JPEG out: right sizes, baseline 4:2:0, close to a full decode', built, async () => {
  const { data: pixels } = await sharp({ create: { width: 1600, height: 1000, channels: 3, background: '#808080' } })
    .composite([{ input: Buffer.from('<svg width="1600" height="1000"><circle cx="800" cy="500" r="400" fill="#c03020"/><rect x="100" y="100" width="300" height="700" fill="#2060d0"/></svg>') }])
    .raw()
    .toBuffer({ resolveWithObject: true });
  const jpeg = await sharp(pixels, { raw: { width: 1600, height: 1000, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  const h = ops.readHeader(jpeg);
  assert.deepEqual([h.width, h.height, h.colorSpace, h.progressive], [1600, 1000, 'ycbcr', false]);
  assert.equal(dctScaleDenom(1600, 1000, 256, 160), 4);
  const raw8 = await ops.transformJpeg(jpeg, { denom: 8 });
  assert.deepEqual([raw8.width, raw8.height], [200, 125]);

  const out = await ops.transformJpeg(jpeg, { denom: 4, resizeWidth: 256, resizeHeight: 160, kernel: 'area', pad: { top: 48, bottom: 48, left: 0, right: 0 }, quality: 95 });
  const meta = await sharp(out.data).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height, meta.isProgressive, meta.chromaSubsampling], ['jpeg', 256, 256, false, '4:2:0']);
  // Against libvips decoding in full and shrinking: the picture must be the same one.
  const ref = await sharp(jpeg).resize(256, 160, { fit: 'fill' }).raw().toBuffer();
  const got = await sharp(out.data).extract({ left: 0, top: 48, width: 256, height: 160 }).raw().toBuffer();
  let se = 0;
  for (let i = 0; i < ref.length; i++) se += (ref[i]! - got[i]!) ** 2;
  const psnr = 10 * Math.log10((255 * 255) / (se / ref.length));
  assert.ok(psnr > 30, `PSNR ${psnr.toFixed(1)} dB`);
  const top = await sharp(out.data).extract({ left: 0, top: 0, width: 256, height: 40 }).raw().toBuffer();
  assert.ok(top.every((v) => v >= 250), 'padding is white');
});

test('a truncated JPEG keeps what decoded; garbage is refused', built, async () => {
  const jpeg = await sharp(noise(400, 300), { raw: { width: 400, height: 300, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  const r = await ops.transformJpeg(jpeg.subarray(0, Math.floor(jpeg.length / 2)), { denom: 1 });
  assert.deepEqual([r.width, r.height], [400, 300]);
  assert.throws(() => ops.readHeader(Buffer.from('<html>')), /JPEG/i);
  await assert.rejects(ops.transformJpeg(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 2, 1, 2, 3]), {}));
});

test('readJpegMarkers finds the EXIF orientation and an ICC profile', async () => {
  const base = sharp({ create: { width: 8, height: 4, channels: 3, background: '#102030' } });
  const rotated = await base.clone().jpeg().withMetadata({ orientation: 6 }).toBuffer();
  // withMetadata embeds libvips' sRGB profile.
  assert.deepEqual(readJpegMarkers(rotated), { orientation: 6, hasIccProfile: true, iccIsSrgb: true });
  const plain = await base.clone().jpeg().toBuffer();
  assert.deepEqual(readJpegMarkers(plain), { orientation: 1, hasIccProfile: false, iccIsSrgb: false });
  const p3 = await base.clone().withIccProfile('p3').jpeg().toBuffer();
  assert.deepEqual(readJpegMarkers(p3), { orientation: 1, hasIccProfile: true, iccIsSrgb: false });
  assert.deepEqual(readJpegMarkers(Buffer.from([0xff, 0xd8, 0xff, 0xe1, 0xff, 0xff])), { orientation: 1, hasIccProfile: false, iccIsSrgb: false });
});

test('every EXIF orientation is turned upright as libvips does it, pixel for pixel', built, async () => {
  const stored = await sharp(noise(37, 23), { raw: { width: 37, height: 23, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  for (let o = 1; o <= 8; o++) {
    const tagged = await sharp(stored).withMetadata({ orientation: o }).jpeg({ quality: 90 }).toBuffer();
    const want = await sharp(tagged).autoOrient().raw().toBuffer({ resolveWithObject: true });
    const got = await ops.transformJpeg(tagged, { orientation: o });
    assert.deepEqual([got.width, got.height], [want.info.width, want.info.height], `orientation ${o}`);
    assert.ok(got.data.equals(want.data), `orientation ${o}: same pixels`);
  }
  assert.throws(() => ops.transformJpeg(stored, { orientation: 9 }), /orientation must be 1-8/);
});

test('a CMYK JPEG decodes natively to RGB, not a negative (OpenCV\'s conversion, no colour management)', built, async () => {
  const rgb = noise(64, 48);
  for (let i = 0; i < 64 * 16 * 3; i++) rgb[i] = [230, 40, 30][i % 3]!; // a red band on top
  const cmyk = await sharp(rgb, { raw: { width: 64, height: 48, channels: 3 } }).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
  assert.equal(ops.readHeader(cmyk).colorSpace, 'cmyk');
  const got = await ops.transformJpeg(cmyk, {});
  assert.deepEqual([got.width, got.height, got.channels], [64, 48, 3]);
  // libvips converts through a CMYK press profile, we do not: close, not equal.
  const managed = await sharp(cmyk).toColourspace('srgb').raw().toBuffer();
  let diff = 0;
  for (let i = 0; i < got.data.length; i++) diff += Math.abs(got.data[i]! - managed[i]!);
  assert.ok(diff / got.data.length < 40, `mean difference ${(diff / got.data.length).toFixed(1)} from libvips' colour-managed decode`);
  const [r, g, b] = [got.data[0]!, got.data[1]!, got.data[2]!];
  assert.ok(r > 150 && g < 110 && b < 110, `the red band stays red: ${r},${g},${b}`);
});

test('dctScaleDenom keeps at least the target size', () => {
  assert.equal(dctScaleDenom(1600, 1200, 256, 192), 4);
  assert.equal(dctScaleDenom(2048, 2048, 256, 256), 8);
  assert.equal(dctScaleDenom(2047, 2047, 256, 256), 8); // libjpeg rounds 255.9 up
  assert.equal(dctScaleDenom(2040, 2040, 256, 256), 4);
  assert.equal(dctScaleDenom(300, 300, 256, 256), 1);
  assert.equal(dctScaleDenom(513, 100, 256, 50), 2);
});

test('trimHeap hands the pages of freed resize buffers back (glibc)', built, async () => {
  const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
  // Several multi-MB intermediate buffers, freed when each call returns.
  const src = noise(1200, 900);
  await Promise.all(Array.from({ length: 6 }, () => ops.transformRaw(src, 1200, 900, 3, { resizeWidth: 256, resizeHeight: 192, kernel: 'lanczos4' })));
  assert.equal(ops.trimHeap(), Boolean(glibc));
});
