// CLIP preprocessing against Pillow: the fixtures are Pillow 11.3's output for img2dataset's real
// test JPEGs (bench/clip-preprocess-parity.py, HF CLIPImageProcessor's steps), float32 CHW.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { ModelFolderError } from '../embeddings-indices-hosting/inference/clip-model.ts';
import { ImagePreprocessor, readPreprocessorConfig } from '../embeddings-indices-hosting/inference/preprocess.ts';

const root = new URL('..', import.meta.url).pathname;
const IMAGES = join(root, '..', 'shared', 'data', 'img2dataset-tests', 'resize_test_image');
const FIXTURES = join(root, 'test', 'fixtures', 'pil-clip-preprocess');
const MEAN = [0.48145466, 0.4578275, 0.40821073];
const STD = [0.26862954, 0.26130258, 0.27577711];

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'clip-pre-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function config(name: string, cfg: object): Promise<string> {
  const p = join(dir, `${name}.json`);
  await writeFile(p, JSON.stringify(cfg));
  return p;
}

const cases = [
  { name: 'bicubic32', cfg: { size: { shortest_edge: 32 }, crop_size: { height: 32, width: 32 }, resample: 3 }, side: 32 },
  // crop_size as a bare int, lanczos, crop smaller than the resize.
  { name: 'lanczos48crop40', cfg: { size: { shortest_edge: 48 }, crop_size: 40, resample: 1 }, side: 40 },
  // size as a bare int (the legacy spelling); crop larger than the image: zero padding, HF offsets.
  { name: 'bilinear20pad32', cfg: { size: 20, crop_size: { height: 32, width: 32 }, resample: 2 }, side: 32 },
];

for (const c of cases) {
  test(`${c.name}: bit-identical to Pillow on real JPEGs`, { skip: !existsSync(IMAGES) && 'no ../shared/data' }, async () => {
    const pre = new ImagePreprocessor(readPreprocessorConfig(await config(c.name, { ...c.cfg, image_mean: MEAN, image_std: STD })));
    assert.equal(pre.preprocessing.size, c.side);
    for (const image of ['208_495', '524_316']) {
      const out = new Float32Array(3 * c.side * c.side);
      await pre.run(readFileSync(join(IMAGES, `${image}.jpg`)), out);
      const buf = readFileSync(join(FIXTURES, `${image}__${c.name}.f32`));
      const want = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
      let differing = 0;
      for (let i = 0; i < want.length; i++) if (want[i] !== out[i]) differing++;
      assert.equal(differing, 0, `${image}: ${differing} of ${want.length} values differ from Pillow`);
    }
  });
}

test('non-JPEG input (PNG with alpha) goes through sharp then the same native steps: alpha dropped, not composited', async () => {
  const pre = new ImagePreprocessor(readPreprocessorConfig(await config('png', { size: 8, crop_size: 8, do_normalize: false })));
  // Half-transparent pure red: PIL's convert("RGB") keeps (255, 0, 0).
  const png = await sharp({ create: { width: 16, height: 12, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 0.5 } } }).png().toBuffer();
  const out = new Float32Array(3 * 64);
  await pre.run(png, out);
  assert.ok(out.subarray(0, 64).every((v) => v === 1));
  assert.ok(out.subarray(64).every((v) => v === 0));
});

test('a CMYK JPEG is decoded to RGB, not refused', async () => {
  const pre = new ImagePreprocessor(readPreprocessorConfig(await config('cmyk', { size: 8, crop_size: 8, do_normalize: false })));
  const cmyk = await sharp({ create: { width: 12, height: 10, channels: 3, background: '#ff0000' } }).toColourspace('cmyk').jpeg().toBuffer();
  const out = new Float32Array(3 * 64);
  await pre.run(cmyk, out);
  assert.ok(out[0]! > 0.9 && out[64]! < 0.1 && out[128]! < 0.1, `${out[0]} ${out[64]} ${out[128]}`);
});

test('a corrupt image rejects; the next image still works', async () => {
  const pre = new ImagePreprocessor(readPreprocessorConfig(await config('corrupt', { size: 8, crop_size: 8 })));
  const out = new Float32Array(3 * 64);
  await assert.rejects(pre.run(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 1, 2, 3]), out));
  await assert.rejects(pre.run(Buffer.from('not an image at all'), out));
  const ok = await sharp({ create: { width: 10, height: 10, channels: 3, background: '#00ff00' } }).jpeg().toBuffer();
  await pre.run(ok, out);
});

test('config values honoured or refused in one line: resample range, rescale and normalise switches, non-square output', async () => {
  const refuses = async (name: string, cfg: object, re: RegExp): Promise<void> => {
    const path = await config(name, cfg);
    assert.throws(() => readPreprocessorConfig(path), (e: unknown) => e instanceof ModelFolderError && re.test((e as Error).message) && !(e as Error).message.includes('\n'));
  };
  await refuses('bad1', { size: 8, crop_size: 8, resample: 7 }, /resample must be a PIL filter id 0-5/);
  await refuses('bad2', { size: 8, do_center_crop: false }, /same square size/);
  await refuses('bad3', { size: { longest_edge: 8 }, crop_size: 8 }, /size must be an integer/);
  await refuses('bad4', { size: 8, crop_size: 8, image_std: [1, 0, 1] }, /image_std has a zero/);

  // do_rescale false + do_normalize false: raw byte values come through.
  const pre = new ImagePreprocessor(readPreprocessorConfig(await config('raw', { size: { height: 4, width: 4 }, do_center_crop: false, do_rescale: false, do_normalize: false })));
  const grey = await sharp({ create: { width: 4, height: 4, channels: 3, background: { r: 200, g: 100, b: 50 } } }).png().toBuffer();
  const out = new Float32Array(48);
  await pre.run(grey, out);
  assert.deepEqual([out[0], out[16], out[32]], [200, 100, 50]);
  // A custom mean / std / rescale_factor is used as given.
  const custom = new ImagePreprocessor(readPreprocessorConfig(await config('custom', { size: 4, crop_size: 4, rescale_factor: 0.5, image_mean: 0, image_std: [2, 4, 5] })));
  await custom.run(grey, out);
  assert.deepEqual([out[0], out[16], out[32]], [50, 12.5, 5]);
});
