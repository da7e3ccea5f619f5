import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { startCrawlHost } from '../demo/crawl-host.ts';
import { CONTENT_TYPES, customSpec, imageSpecFor, imagesRoute, renderImage, writeImageCorpus, type ImageFormat, type ImageSpec } from '../demo/images.ts';

test('image specs are deterministic and cover every format and awkward case', () => {
  assert.deepEqual(imageSpecFor(17, 3), imageSpecFor(17, 3));
  assert.notDeepEqual(imageSpecFor(17, 3), imageSpecFor(17, 4));
  const specs = Array.from({ length: 2000 }, (_, n) => imageSpecFor(n));
  const formats = new Map<ImageFormat, number>();
  for (const s of specs) formats.set(s.format, (formats.get(s.format) ?? 0) + 1);
  assert.deepEqual([...formats.keys()].sort(), ['gif', 'jpeg', 'png', 'webp']);
  assert.ok(formats.get('jpeg')! > 1000, 'mostly JPEG');
  for (const flag of ['exifRotated', 'greyscale', 'cmyk', 'alpha', 'animated'] as const) {
    assert.ok(specs.some((s) => s[flag]), flag);
  }
  const sides = specs.flatMap((s) => [s.width, s.height]);
  assert.ok(Math.min(...sides) >= 16 && Math.max(...sides) <= 4000);
  assert.ok(specs.some((s) => Math.max(s.width, s.height) <= 64), 'a few tiny');
  assert.ok(specs.some((s) => Math.max(s.width, s.height) >= 2000), 'a few huge');
  const photo = specs.filter((s) => Math.max(s.width, s.height) >= 320 && Math.max(s.width, s.height) <= 1600).length;
  assert.ok(photo / specs.length > 0.85, 'mostly 320-1600');
});

async function checkRendered(spec: ImageSpec): Promise<void> {
  const buf = await renderImage(spec);
  const meta = await sharp(buf).metadata();
  assert.equal(meta.format, spec.format, `n=${spec.n}`);
  const swapped = spec.orientation >= 5;
  assert.deepEqual([meta.width, meta.height], swapped ? [spec.height, spec.width] : [spec.width, spec.height], `stored size n=${spec.n}`);
  assert.equal(meta.orientation ?? 1, spec.orientation);
  const upright = await sharp(buf).autoOrient().toBuffer({ resolveWithObject: true });
  assert.deepEqual([upright.info.width, upright.info.height], [spec.width, spec.height]);
  if (spec.greyscale) assert.equal(meta.channels, 1);
  if (spec.cmyk) assert.equal(meta.space, 'cmyk');
  if (spec.alpha) assert.equal(meta.hasAlpha, true);
  if (spec.animated) assert.equal(meta.pages, 3);
}

test('rendered images decode to their spec: format, size, orientation, channels, frames', async () => {
  const base = { width: 300, height: 200 };
  for (const spec of [
    customSpec({ ...base }),
    customSpec({ ...base, orientation: 6 }),
    customSpec({ ...base, orientation: 8 }),
    customSpec({ ...base, orientation: 3 }),
    customSpec({ ...base, greyscale: true }),
    customSpec({ ...base, cmyk: true }),
    customSpec({ ...base, format: 'png', alpha: true }),
    customSpec({ ...base, format: 'png', greyscale: true }),
    customSpec({ ...base, format: 'webp', alpha: true }),
    customSpec({ ...base, format: 'gif', animated: true }),
    customSpec({ width: 16, height: 16, format: 'gif' }),
  ]) {
    await checkRendered(spec);
  }
  // Rotated content is upright once the tag is applied: the upright render and the rotated one agree.
  const plain = await sharp(await renderImage(customSpec({ width: 120, height: 80 }))).raw().toBuffer();
  const rotated = await sharp(await renderImage(customSpec({ width: 120, height: 80, orientation: 6 }))).autoOrient().raw().toBuffer();
  let diff = 0;
  for (let i = 0; i < plain.length; i++) diff += Math.abs(plain[i] - rotated[i]);
  assert.ok(diff / plain.length < 12, `mean difference ${diff / plain.length}`);
  // Same spec, same bytes.
  assert.ok((await renderImage(imageSpecFor(5))).equals(await renderImage(imageSpecFor(5))));
});

test('a 1024 px photo-like JPEG has a web-like size', async () => {
  const buf = await renderImage(customSpec({ width: 1024, height: 768, quality: 90 }));
  assert.ok(buf.length > 60_000 && buf.length < 400_000, `${buf.length} bytes`);
});

test('the images route serves each format with the right headers, ignoring the extension', async () => {
  const host = await startCrawlHost({ files: 1, rowsPerFile: 5 });
  let served = 0;
  host.addRoute('/images/', imagesRoute({ seed: 0, cacheSize: 4, onBytes: (n) => (served += n) }));
  try {
    const firstOf = new Map<ImageFormat, number>();
    for (let n = 0; firstOf.size < 4 && n < 500; n++) {
      const f = imageSpecFor(n).format;
      if (!firstOf.has(f)) firstOf.set(f, n);
    }
    assert.equal(firstOf.size, 4);
    for (const [format, n] of firstOf) {
      const res = await fetch(`${host.origin}/images/${n}.jpg`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), CONTENT_TYPES[format]);
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(Number(res.headers.get('content-length')), body.length);
      const meta = await sharp(body).metadata();
      assert.equal(meta.format, format);
      const head = await fetch(`${host.origin}/images/${n}.png`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(Number(head.headers.get('content-length')), body.length);
      assert.equal(head.headers.get('content-type'), CONTENT_TYPES[format]);
      const other = Buffer.from(await (await fetch(`${host.origin}/images/${n}.webp`)).arrayBuffer());
      assert.ok(other.equals(body), 'the extension does not change the content');
    }
    assert.ok(served > 0);
    for (const bad of ['/images/abc.jpg', '/images/-1.jpg', '/images/99999999999.jpg', '/images/', '/images/1/2.jpg']) {
      const res = await fetch(host.origin + bad);
      assert.equal(res.status, 404, bad);
      await res.arrayBuffer();
    }
  } finally {
    await host.close();
  }
});

test('writeImageCorpus writes photo-like JPEGs within the size range', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'corpus-'));
  try {
    const summary = await writeImageCorpus(dir, 6, { seed: 1, minSide: 320, maxSide: 400 });
    assert.equal(summary.files, 6);
    const names = (await readdir(dir)).sort();
    assert.deepEqual(names, ['0.jpg', '1.jpg', '2.jpg', '3.jpg', '4.jpg', '5.jpg']);
    let total = 0;
    for (const name of names) {
      const buf = await readFile(join(dir, name));
      total += buf.length;
      const meta = await sharp(buf).metadata();
      assert.equal(meta.format, 'jpeg');
      assert.ok(meta.width! >= 320 && meta.width! <= 400 && meta.height! >= 320 && meta.height! <= 400, `${name} ${meta.width}x${meta.height}`);
    }
    assert.equal(summary.bytes, total);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
