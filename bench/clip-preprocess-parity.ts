// Our CLIP preprocessing (native, lib/image-ops/clip-preprocess.cc) against Pillow's, as the
// Hugging Face CLIPImageProcessor runs it, on img2dataset's real test JPEGs (../shared/data) and a
// PNG with alpha made from one of them, for each PIL filter and for up- and downscaling.
//   python3 -m venv .bench/venv && .bench/venv/bin/pip install Pillow numpy
//   npx tsx bench/clip-preprocess-parity.ts [--python .bench/venv/bin/python]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import sharp from 'sharp';
import { ImagePreprocessor, readPreprocessorConfig } from '../embeddings-indices-hosting/inference/preprocess.ts';

const root = new URL('..', import.meta.url).pathname;
const pyIdx = process.argv.indexOf('--python');
const python = pyIdx > 0 ? process.argv[pyIdx + 1]! : join(root, '.bench', 'venv', 'bin', 'python');
const imageDir = join(root, '..', 'shared', 'data', 'img2dataset-tests', 'resize_test_image');

const MEAN = [0.48145466, 0.4578275, 0.40821073];
const STD = [0.26862954, 0.26130258, 0.27577711];
const configs: Record<string, { shortest_edge: number; crop: number; resample: number }> = {
  bicubic224: { shortest_edge: 224, crop: 224, resample: 3 },
  bicubic32: { shortest_edge: 32, crop: 32, resample: 3 },
  bicubic336: { shortest_edge: 336, crop: 336, resample: 3 },
  bilinear224: { shortest_edge: 224, crop: 224, resample: 2 },
  lanczos224: { shortest_edge: 224, crop: 224, resample: 1 },
  box224: { shortest_edge: 224, crop: 224, resample: 4 },
  hamming224: { shortest_edge: 224, crop: 224, resample: 5 },
  nearest224: { shortest_edge: 224, crop: 224, resample: 0 },
  crop_larger: { shortest_edge: 200, crop: 224, resample: 3 },
};

const work = mkdtempSync(join(tmpdir(), 'clip-parity-'));
try {
  const images = readdirSync(imageDir).filter((f) => f.endsWith('.jpg')).map((f) => join(imageDir, f));
  const png = join(work, 'alpha_389_535.png');
  await sharp(images.find((p) => p.endsWith('389_535.jpg'))!).ensureAlpha(0.5).png().toFile(png);
  images.push(png);
  const full = Object.fromEntries(Object.entries(configs).map(([k, c]) => [k, { ...c, mean: MEAN, std: STD, rescale_factor: 1 / 255 }]));
  const pilOut = join(work, 'pil');
  execFileSync(python, [join(root, 'bench', 'clip-preprocess-parity.py'), pilOut, JSON.stringify(full), ...images], { stdio: 'inherit' });

  console.log('| image | config | values | exactly equal | max abs diff |');
  console.log('|---|---|---|---|---|');
  let worst = 0;
  for (const [name, c] of Object.entries(configs)) {
    const cfgPath = join(work, `${name}.json`);
    writeFileSync(cfgPath, JSON.stringify({ do_resize: true, size: { shortest_edge: c.shortest_edge }, resample: c.resample, do_center_crop: true, crop_size: { height: c.crop, width: c.crop }, image_mean: MEAN, image_std: STD }));
    const pre = new ImagePreprocessor(readPreprocessorConfig(cfgPath));
    for (const img of images) {
      const out = new Float32Array(3 * c.crop * c.crop);
      await pre.run(readFileSync(img), out);
      const refBuf = readFileSync(join(pilOut, `${basename(img).replace(/\.[^.]+$/, '')}__${name}.f32`));
      const ref = new Float32Array(refBuf.buffer, refBuf.byteOffset, refBuf.byteLength / 4);
      let equal = 0;
      let maxDiff = 0;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(ref[i]! - out[i]!);
        if (d === 0) equal++;
        maxDiff = Math.max(maxDiff, d);
      }
      worst = Math.max(worst, maxDiff);
      console.log(`| ${basename(img)} | ${name} | ${ref.length} | ${((100 * equal) / ref.length).toFixed(3)}% | ${maxDiff.toPrecision(3)} |`);
    }
  }
  console.log(`\nworst max abs diff ${worst.toPrecision(3)} (one 8-bit level after normalisation is about ${(1 / 255 / STD[1]!).toPrecision(3)})`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
