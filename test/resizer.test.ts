import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import {
  createResizer,
  DEFAULT_RESIZER_OPTIONS,
  imghdrWhat,
  planResize,
  resolveEngine,
  roundHalfEven,
  type ResizeMode,
  type ResizerEngine,
  type ResizerOptions,
} from '../download_images/resizer.ts';

const REF_DIR = new URL('../../shared/data/img2dataset-tests/resize_test_image/', import.meta.url).pathname;

async function decode(buf: Buffer) {
  const meta = await sharp(buf).metadata();
  const { data, info } = await sharp(buf).raw().toBuffer({ resolveWithObject: true });
  const px = (x: number, y: number): number[] => Array.from(data.subarray((y * info.width + x) * info.channels, (y * info.width + x + 1) * info.channels));
  return { meta, info, px };
}

/** A flat-colour PNG (exact pixels, unlike JPEG). */
const solidPng = (width: number, height: number, rgb = { r: 200, g: 30, b: 40 }): Promise<Buffer> =>
  sharp({ create: { width, height, channels: 3, background: rgb } }).png().toBuffer();

const solidJpeg = (width: number, height: number): Promise<Buffer> =>
  sharp({ create: { width, height, channels: 3, background: { r: 90, g: 140, b: 60 } } }).jpeg({ quality: 90 }).toBuffer();

// Sizes as img2dataset computes them for image_size 256 (Python round-half-even on float64).
const REFERENCE_SIZES: Record<string, Record<Exclude<ResizeMode, 'no'>, [number, number]>> = {
  '123_456.jpg': { keep_ratio: [256, 949], center_crop: [256, 256], border: [256, 256], keep_ratio_largest: [69, 256] },
  '208_495.jpg': { keep_ratio: [256, 609], center_crop: [256, 256], border: [256, 256], keep_ratio_largest: [108, 256] },
  '321_421.jpg': { keep_ratio: [256, 336], center_crop: [256, 256], border: [256, 256], keep_ratio_largest: [195, 256] },
  '389_535.jpg': { keep_ratio: [256, 352], center_crop: [256, 256], border: [256, 256], keep_ratio_largest: [186, 256] },
  '416_264.jpg': { keep_ratio: [403, 256], center_crop: [256, 256], border: [256, 256], keep_ratio_largest: [256, 162] },
  '456_123.jpg': { keep_ratio: [949, 256], center_crop: [256, 256], border: [256, 256], keep_ratio_largest: [256, 69] },
  '524_316.jpg': { keep_ratio: [425, 256], center_crop: [256, 256], border: [256, 256], keep_ratio_largest: [256, 154] },
};

test('the fast engine is built and chosen by default (npm run build:native)', () => {
  assert.equal(resolveEngine(undefined).engine, 'fast', resolveEngine(undefined).note ?? '');
  assert.equal(resolveEngine('sharp').engine, 'sharp');
});

// Every behaviour below holds for both engines.
for (const engine of ['fast', 'exact', 'sharp'] as const satisfies readonly ResizerEngine[]) {
  describe(`${engine} engine`, () => {
    const opts = (over: Partial<ResizerOptions> = {}): ResizerOptions => ({ ...DEFAULT_RESIZER_OPTIONS, engine, ...over });

    test('every resize mode gives img2dataset sizes on its own test images', { skip: !existsSync(REF_DIR) && 'shared test data absent' }, async () => {
      for (const [file, sizes] of Object.entries(REFERENCE_SIZES)) {
        const input = readFileSync(REF_DIR + file);
        const [ow, oh] = file.replace('.jpg', '').split('_').map(Number);
        const modes = { ...sizes, no: [ow, oh] as [number, number] };
        for (const [mode, [ew, eh]] of Object.entries(modes)) {
          const r = await createResizer(opts({ resizeMode: mode as ResizeMode }))(input);
          assert.equal(r.error, null, `${file} ${mode}`);
          assert.deepEqual([r.width, r.height, r.originalWidth, r.originalHeight], [ew, eh, ow, oh], `${file} ${mode}`);
          const { meta } = await decode(r.image!);
          assert.deepEqual([meta.format, meta.width, meta.height], ['jpeg', ew, eh], `${file} ${mode} decoded`);
        }
        // resize_only_if_bigger: nothing happens (no crop, no pad) unless the relevant side exceeds 256.
        for (const mode of ['keep_ratio', 'center_crop', 'border', 'keep_ratio_largest'] as const) {
          const r = await createResizer(opts({ resizeMode: mode, resizeOnlyIfBigger: true }))(input);
          const side = mode === 'keep_ratio' || mode === 'center_crop' ? Math.min(ow, oh) : Math.max(ow, oh);
          const expected = side > 256 ? sizes[mode] : [ow, oh];
          assert.deepEqual([r.width, r.height], expected, `${file} ${mode} only-if-bigger`);
        }
      }
    });

    test('output JPEG is baseline 4:2:0 at the requested quality', async () => {
      const input = await solidJpeg(640, 480);
      const r = await createResizer(opts())(input);
      const { meta } = await decode(r.image!);
      assert.equal(meta.isProgressive, false);
      assert.equal(meta.chromaSubsampling, '4:2:0');
      assert.equal(meta.channels, 3);
      const low = await createResizer(opts({ encodeQuality: 20 }))(await sharp({ create: { width: 640, height: 480, channels: 3, background: '#000000', noise: { type: 'gaussian', mean: 128, sigma: 40 } } }).png().toBuffer());
      const high = await createResizer(opts({ encodeQuality: 95 }))(await sharp({ create: { width: 640, height: 480, channels: 3, background: '#000000', noise: { type: 'gaussian', mean: 128, sigma: 40 } } }).png().toBuffer());
      assert.ok(low.image!.length < high.image!.length, 'quality changes the size');
    });

    test('border mode pads with white and puts the odd pixel bottom/right', async () => {
      // 123x456 -> 69x256 inside 256x256: left pad int(187/2) = 93, right 94.
      const r = await createResizer(opts({ encodeFormat: 'png', encodeQuality: 1, resizeMode: 'border' }))(await solidPng(123, 456));
      assert.deepEqual([r.width, r.height], [256, 256]);
      const { px } = await decode(r.image!);
      assert.deepEqual(px(92, 128), [255, 255, 255]);
      assert.notDeepEqual(px(93, 128), [255, 255, 255]);
      assert.notDeepEqual(px(93 + 68, 128), [255, 255, 255]);
      assert.deepEqual(px(93 + 69, 128), [255, 255, 255]);
      // Vertical odd padding: 456x123 -> 256x69, top pad 93.
      const v = await createResizer(opts({ encodeFormat: 'png', encodeQuality: 1, resizeMode: 'border' }))(await solidPng(456, 123));
      const dv = await decode(v.image!);
      assert.deepEqual(dv.px(128, 92), [255, 255, 255]);
      assert.notDeepEqual(dv.px(128, 93), [255, 255, 255]);
      assert.deepEqual(dv.px(128, 93 + 69), [255, 255, 255]);
    });

    test('keep_ratio rounding is half-to-even like Python round()', async () => {
      assert.equal(roundHalfEven(150.5), 150);
      assert.equal(roundHalfEven(151.5), 152);
      assert.equal(roundHalfEven(2.4999), 2);
      // 512x301 at scale 0.5 -> 150.5 -> 150 (Math.round would say 151); 512x303 -> 151.5 -> 152.
      const a = await createResizer(opts({ resizeMode: 'keep_ratio_largest' }))(await solidJpeg(512, 301));
      assert.deepEqual([a.width, a.height], [256, 150]);
      const b = await createResizer(opts({ resizeMode: 'keep_ratio_largest' }))(await solidJpeg(512, 303));
      assert.deepEqual([b.width, b.height], [256, 152]);
      assert.deepEqual((await decode(b.image!)).meta.height, 152);
      // center_crop offsets: (H - S) // 2.
      const plan = planResize(300, 1001, 'center_crop', 256, false);
      assert.deepEqual(plan.crop, { left: 0, top: Math.floor((plan.resizedHeight - 256) / 2), width: 256, height: 256 });
      assert.equal(plan.resizedHeight, 854);
    });

    test('tiny 16 px images are upscaled, huge 4000 px ones shrink', async () => {
      const tiny = await createResizer(opts({ resizeMode: 'keep_ratio' }))(await solidPng(16, 24));
      assert.deepEqual([tiny.width, tiny.height, tiny.originalWidth, tiny.originalHeight], [256, 384, 16, 24]);
      const huge = await createResizer(opts({ resizeMode: 'keep_ratio' }))(await solidJpeg(4000, 3000));
      assert.deepEqual([huge.width, huge.height, huge.originalWidth, huge.originalHeight], [341, 256, 4000, 3000]);
      const { meta } = await decode(huge.image!);
      assert.deepEqual([meta.width, meta.height], [341, 256]);
    });

    test('EXIF orientation is applied before resizing', async () => {
      // Upright 100x200: top half red, bottom half blue; stored rotated with orientation 6.
      const upright = Buffer.alloc(100 * 200 * 3);
      for (let i = 0; i < 100 * 200; i++) upright.set(i < 100 * 100 ? [255, 0, 0] : [0, 0, 255], i * 3);
      const stored = await sharp(upright, { raw: { width: 100, height: 200, channels: 3 } }).rotate(270).withMetadata({ orientation: 6 }).jpeg({ quality: 95 }).toBuffer();
      assert.deepEqual([(await sharp(stored).metadata()).width, (await sharp(stored).metadata()).orientation], [200, 6]);
      const r = await createResizer(opts({ resizeMode: 'no', encodeFormat: 'png', encodeQuality: 1 }))(stored);
      assert.deepEqual([r.originalWidth, r.originalHeight, r.width, r.height], [100, 200, 100, 200]);
      const { px } = await decode(r.image!);
      assert.ok(px(50, 20)[0] > 200 && px(50, 20)[2] < 60, `top is red: ${px(50, 20)}`);
      assert.ok(px(50, 180)[2] > 200 && px(50, 180)[0] < 60, `bottom is blue: ${px(50, 180)}`);
      const k = await createResizer(opts({ resizeMode: 'keep_ratio_largest' }))(stored);
      assert.deepEqual([k.width, k.height], [128, 256]);
      // skip_reencode must not keep bytes whose tag a reader might ignore.
      const s = await createResizer(opts({ resizeMode: 'no', skipReencode: true }))(stored);
      assert.notDeepEqual(s.image, stored);
      assert.equal((await sharp(s.image!).metadata()).orientation, undefined);
    });

    test('greyscale and CMYK JPEGs come out as 3-channel sRGB', async () => {
      const grey = await sharp({ create: { width: 300, height: 200, channels: 3, background: '#808080' } }).toColourspace('b-w').jpeg().toBuffer();
      assert.equal((await sharp(grey).metadata()).channels, 1);
      const g = await createResizer(opts())(grey);
      const gm = (await decode(g.image!)).meta;
      assert.deepEqual([gm.channels, gm.space, gm.width, gm.height], [3, 'srgb', 256, 256]);

      const cmyk = await sharp({ create: { width: 300, height: 200, channels: 3, background: '#d02020' } }).toColourspace('cmyk').jpeg().toBuffer();
      assert.equal((await sharp(cmyk).metadata()).space, 'cmyk');
      const c = await createResizer(opts({ resizeMode: 'no', encodeFormat: 'png', encodeQuality: 1 }))(cmyk);
      const dc = await decode(c.image!);
      assert.deepEqual([dc.meta.channels, dc.meta.space], [3, 'srgb']);
      const [r, gg, b] = dc.px(150, 100);
      assert.ok(r > 150 && gg < 90 && b < 90, `still red: ${[r, gg, b]}`);
    });

    test('alpha is flattened over white with img2dataset formula', async () => {
      // Left half fully transparent red, right half red at alpha 128.
      const raw = Buffer.alloc(20 * 10 * 4);
      for (let y = 0; y < 10; y++) {
        for (let x = 0; x < 20; x++) raw.set([255, 0, 0, x < 10 ? 0 : 128], (y * 20 + x) * 4);
      }
      const png = await sharp(raw, { raw: { width: 20, height: 10, channels: 4 } }).png().toBuffer();
      const r = await createResizer(opts({ resizeMode: 'no', encodeFormat: 'png', encodeQuality: 1, skipReencode: true }))(png);
      assert.notDeepEqual(r.image, png, 'alpha forces a re-encode even with skip_reencode');
      const { px, info } = await decode(r.image!);
      assert.equal(info.channels, 3);
      assert.deepEqual(px(3, 5), [255, 255, 255]);
      // a/255*c + 255 - a: R = 128 + 127 = 255, G = B = 127.
      const [R, G, B] = px(15, 5);
      assert.equal(R, 255);
      assert.ok(Math.abs(G - 127) <= 1 && Math.abs(B - 127) <= 1, `half alpha over white: ${[R, G, B]}`);
    });

    test('filters fail with img2dataset error strings', async () => {
      const img = await solidPng(100, 80);
      const err = async (over: Partial<ResizerOptions>) => (await createResizer(opts(over))(img));
      const small = await err({ minImageSize: 81 });
      assert.deepEqual([small.error, small.image, small.width, small.originalWidth], ['image too small', null, null, null]);
      assert.equal((await err({ minImageSize: 80 })).error, null);
      assert.equal((await err({ maxImageArea: 7999 })).error, 'image area too large');
      assert.equal((await err({ maxImageArea: 8000 })).error, null);
      const wide = await createResizer(opts({ maxAspectRatio: 2.9 }))(await solidPng(300, 100));
      assert.equal(wide.error, 'aspect ratio too large');
      assert.equal((await createResizer(opts({ maxAspectRatio: 3 }))(await solidPng(300, 100))).error, null);
      assert.equal((await createResizer(opts())(Buffer.from('<html>not an image</html>'))).error, 'Image decoding error');
      assert.equal((await createResizer(opts())(Buffer.alloc(0))).error, 'Image decoding error');
    });

    test('a decompression bomb fails from its header without being decoded', async () => {
      const png = Buffer.from(await solidPng(100, 100));
      png.writeUInt32BE(30000, 16); // IHDR width
      png.writeUInt32BE(30000, 20); // IHDR height (the CRC is now wrong too; only the header is read)
      const before = process.memoryUsage().rss;
      const r = await createResizer(opts())(png);
      assert.deepEqual([r.error, r.image], ['image pixels exceed max_image_pixels', null]);
      assert.ok(process.memoryUsage().rss - before < 200 * 1024 * 1024, '30000x30000x3 would be 2.7 GB');
      const capped = await createResizer(opts({ maxImagePixels: 9999 }))(await solidPng(100, 100));
      assert.equal(capped.error, 'image pixels exceed max_image_pixels');
      assert.equal((await createResizer(opts({ maxImagePixels: 10000 }))(await solidPng(100, 100))).error, null);
    });

    test('skip_reencode keeps the input bytes only when nothing changes', async () => {
      const jpeg = await solidJpeg(300, 200);
      assert.equal(imghdrWhat(jpeg), 'jpg');
      const same = await createResizer(opts({ resizeMode: 'no', skipReencode: true }))(jpeg);
      assert.ok(same.image!.equals(jpeg));
      assert.deepEqual([same.width, same.height], [300, 200]);
      // Resize skipped by resize_only_if_bigger: bytes kept, no padding.
      const small = await createResizer(opts({ resizeMode: 'border', resizeOnlyIfBigger: true, imageSize: 512, skipReencode: true }))(jpeg);
      assert.ok(small.image!.equals(jpeg));
      // A resize (even border at scale 1) re-encodes.
      const resized = await createResizer(opts({ resizeMode: 'border', skipReencode: true }))(jpeg);
      assert.ok(!resized.image!.equals(jpeg));
      // Another format re-encodes to the target.
      const png = await solidPng(300, 200);
      const fromPng = await createResizer(opts({ resizeMode: 'no', skipReencode: true }))(png);
      assert.equal(imghdrWhat(fromPng.image!), 'jpg');
      const keptPng = await createResizer(opts({ resizeMode: 'no', skipReencode: true, encodeFormat: 'png', encodeQuality: 9 }))(png);
      assert.ok(keptPng.image!.equals(png));
      // Without skip_reencode mode `no` still re-encodes.
      assert.ok(!(await createResizer(opts({ resizeMode: 'no' }))(jpeg)).image!.equals(jpeg));
    });

    test('disable_all_reencoding returns the raw bytes with no sizes, even for non-images', async () => {
      const garbage = Buffer.from('definitely not an image');
      const r = await createResizer(opts({ disableAllReencoding: true }))(garbage);
      assert.deepEqual(r, { image: garbage, width: null, height: null, originalWidth: null, originalHeight: null, error: null });
    });

    test('each encode format decodes back to the right size', async () => {
      const input = await solidJpeg(500, 300);
      for (const [format, quality, decoded] of [['jpg', 95, 'jpeg'], ['png', 9, 'png'], ['webp', 80, 'webp'], ['webp', 101, 'webp']] as const) {
        const r = await createResizer(opts({ resizeMode: 'keep_ratio_largest', encodeFormat: format, encodeQuality: quality }))(input);
        assert.equal(r.error, null);
        const { meta } = await decode(r.image!);
        assert.deepEqual([meta.format, meta.width, meta.height], [decoded, 256, 154], `${format} q${quality}`);
      }
      assert.throws(() => createResizer(opts({ encodeFormat: 'png', encodeQuality: 95 })), /between 0 and 9/);
      assert.throws(() => createResizer(opts({ resizeMode: 'stretch' as ResizeMode })), /Invalid option for resize_mode: stretch/);
      assert.throws(() => createResizer(opts({ downscaleInterpolation: 'sinc' })), /interpolation/);
      for (const name of ['nearest', 'linear', 'bilinear', 'cubic', 'bicubic', 'area', 'lanczos', 'LANCZOS4']) {
        const r = await createResizer(opts({ downscaleInterpolation: name, upscaleInterpolation: name }))(input);
        assert.deepEqual([r.width, r.height], [256, 256], name);
      }
    });

    test('an animated GIF gives its first frame', async () => {
      const frame = (hex: string) => sharp({ create: { width: 40, height: 30, channels: 3, background: hex } }).raw().toBuffer();
      const frames = Buffer.concat([await frame('#ff0000'), await frame('#0000ff')]);
      const gif = await sharp(frames, { raw: { width: 40, height: 60, channels: 3, pageHeight: 30 } }).gif({ delay: [100, 100] }).toBuffer();
      assert.equal((await sharp(gif).metadata()).pages, 2);
      const r = await createResizer(opts({ resizeMode: 'no', encodeFormat: 'png', encodeQuality: 1 }))(gif);
      assert.deepEqual([r.width, r.height], [40, 30]);
      const [R, , B] = (await decode(r.image!)).px(20, 15);
      assert.ok(R > 200 && B < 50, `first frame is red: ${[R, B]}`);
    });

    test('bounding boxes are blurred between resize and crop, the rest untouched', async () => {
      // A 1-pixel checkerboard: blur turns it grey, untouched areas keep 0/255.
      const raw = Buffer.alloc(200 * 200 * 3);
      for (let y = 0; y < 200; y++) for (let x = 0; x < 200; x++) raw.fill((x + y) % 2 ? 255 : 0, (y * 200 + x) * 3, (y * 200 + x + 1) * 3);
      const png = await sharp(raw, { raw: { width: 200, height: 200, channels: 3 } }).png().toBuffer();
      const resize = createResizer(opts({ resizeMode: 'no', encodeFormat: 'png', encodeQuality: 1 }));
      const r = await resize(png, [[0.4, 0.4, 0.6, 0.6]]);
      const { px } = await decode(r.image!);
      const centre = px(100, 100)[0];
      assert.ok(centre > 60 && centre < 195, `centre blurred: ${centre}`);
      assert.ok([0, 255].includes(px(10, 10)[0]) && [0, 255].includes(px(190, 190)[0]), 'corners untouched');
      const none = await resize(png, []);
      assert.ok([0, 255].includes((await decode(none.image!)).px(100, 100)[0]), 'empty box list blurs nothing');
    });
  });
}
