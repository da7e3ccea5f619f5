// The addon decodes progressive JPEGs' refinement scans itself (lib/image-ops/progressive-refine.cc);
// these tests hold it to libjpeg's own decode of the same file, byte for byte, over the scan scripts,
// restart intervals and samplings jpegtran can write, and over damaged files (where it must fall back).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import sharp from 'sharp';
import { customSpec, renderImage } from '../demo/images.ts';
import { loadImageOps, type ImageOps } from '../lib/image-ops/index.ts';

const loaded = loadImageOps();
const ops = loaded.ops as ImageOps;
const built = { skip: !loaded.ops && `addon not built: ${loaded.reason}` };
const dir = mkdtempSync(join(tmpdir(), 'progressive-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** jpegtran (Debian libjpeg-turbo-progs, installed by .ci/install): lossless rewrites of a JPEG's scans. */
function jpegtran(input: Buffer, args: string[]): Buffer {
  const src = join(dir, 'in.jpg');
  writeFileSync(src, input);
  try {
    return execFileSync('jpegtran', [...args, src], { maxBuffer: 64 << 20 });
  } catch (err) {
    throw new Error(`jpegtran ${args.join(' ')} failed (install the Debian package libjpeg-turbo-progs): ${String(err)}`);
  }
}

/** A scan script for jpegtran -scans: DC in three bit planes, AC in two bands and three. */
const DEEP_SCRIPT = `
0,1,2: 0 0 0 2;
0: 1 5 0 3;
0: 6 63 0 3;
1: 1 63 0 2;
2: 1 63 0 2;
0,1,2: 0 0 2 1;
0: 1 63 3 2;
0: 1 63 2 1;
1: 1 63 2 1;
2: 1 63 2 1;
0,1,2: 0 0 1 0;
0: 1 63 1 0;
1: 1 63 1 0;
2: 1 63 1 0;
`;

/** Decodes with our refinement and with libjpeg's at every scale; asserts identical pixels. */
function assertSameAsLibjpeg(jpeg: Buffer, what: string, expectOwn: boolean): void {
  for (const denom of [1, 2, 4, 8] as const) {
    const own = ops.decodeJpeg(jpeg, denom, true);
    const lib = ops.decodeJpeg(jpeg, denom, false);
    assert.equal(lib.refinedHere, false);
    assert.equal(own.refinedHere, expectOwn, `${what} at 1/${denom}: refinement path`);
    assert.deepEqual([own.width, own.height], [lib.width, lib.height], `${what} at 1/${denom}: size`);
    assert.ok(own.data.equals(lib.data), `${what} at 1/${denom}: pixels differ from libjpeg's`);
  }
}

async function photo(width: number, height: number, quality = 92, chroma: '4:2:0' | '4:4:4' = '4:2:0'): Promise<Buffer> {
  const base = await renderImage(customSpec({ width, height, quality }));
  return chroma === '4:2:0' ? base : sharp(base).jpeg({ quality, chromaSubsampling: chroma }).toBuffer();
}

test('progressive refinement matches libjpeg for scan scripts, restarts and samplings', built, async () => {
  const cases: Array<[string, Buffer]> = [];
  for (const [w, h, chroma] of [
    [640, 480, '4:2:0'],
    [333, 217, '4:2:0'],
    [257, 129, '4:4:4'],
    [17, 9, '4:2:0'],
  ] as const) {
    const base = await photo(w, h, 92, chroma);
    const name = `${w}x${h} ${chroma}`;
    cases.push(
      [`${name} standard script`, jpegtran(base, ['-progressive'])],
      [`${name} restart every MCU row`, jpegtran(base, ['-progressive', '-restart', '1'])],
      [`${name} restart every 3 MCUs`, jpegtran(base, ['-progressive', '-restart', '3B'])],
      [`${name} grayscale`, jpegtran(base, ['-progressive', '-grayscale'])],
    );
    writeFileSync(join(dir, 'scans.txt'), DEEP_SCRIPT);
    cases.push([`${name} deep script`, jpegtran(base, ['-scans', join(dir, 'scans.txt')])]);
  }
  // A high-quality file: most coefficients are nonzero by the last refinement.
  cases.push(['q100', jpegtran(await photo(400, 300, 100), ['-progressive'])]);
  for (const [what, jpeg] of cases) assertSameAsLibjpeg(jpeg, what, true);
});

test('files the refinement path does not take decode exactly as libjpeg does', built, async () => {
  const base = jpegtran(await photo(320, 240), ['-copy', 'none']);
  assert.equal(ops.readHeader(base).progressive, false);
  assertSameAsLibjpeg(base, 'baseline', false);
  assertSameAsLibjpeg(jpegtran(base, ['-progressive', '-arithmetic']), 'arithmetic progressive', false);
  // Progressive but without successive approximation: nothing to refine.
  writeFileSync(join(dir, 'spectral.txt'), '0,1,2: 0 0 0 0; 0: 1 9 0 0; 0: 10 63 0 0; 1: 1 63 0 0; 2: 1 63 0 0;');
  assertSameAsLibjpeg(jpegtran(base, ['-scans', join(dir, 'spectral.txt')]), 'spectral selection only', false);
});

test('damaged progressive files fall back to libjpeg and keep its output', built, async () => {
  const prog = jpegtran(await photo(480, 360), ['-progressive', '-restart', '2']);
  // Cut inside a refinement scan (the last scans are refinements), and just before EOI.
  assertSameAsLibjpeg(prog.subarray(0, Math.floor(prog.length * 0.8)), 'truncated at 80%', false);
  assertSameAsLibjpeg(prog.subarray(0, prog.length - 2), 'EOI missing', false);
  // Random byte damage in the second half, where the refinement scans are: each file decodes as
  // libjpeg decodes it, whichever path takes it.
  let s = 12345;
  let own = 0;
  for (let i = 0; i < 40; i++) {
    const bad = Buffer.from(prog);
    for (let j = 0; j < 3; j++) {
      s = (s * 1103515245 + 12345) >>> 0;
      const at = Math.floor(prog.length / 2) + (s % Math.floor(prog.length / 2 - 2));
      s = (s * 1103515245 + 12345) >>> 0;
      bad[at] = s >>> 24;
    }
    // Damage that lands on a marker is an error: libjpeg's own, the same either way.
    const decode = (refineHere: boolean): ReturnType<ImageOps['decodeJpeg']> | string => {
      try {
        return ops.decodeJpeg(bad, 4, refineHere);
      } catch (err) {
        return (err as Error).message;
      }
    };
    const a = decode(true);
    const b = decode(false);
    if (typeof a === 'string' || typeof b === 'string') {
      assert.equal(a, b, `damaged file ${i}: not the same error as libjpeg's`);
      continue;
    }
    if (a.refinedHere) own++;
    assert.ok(a.data.equals(b.data) && a.width === b.width, `damaged file ${i}: pixels differ from libjpeg's`);
  }
  // Most damage lands in entropy-coded data, where both decoders read the same wrong bits.
  assert.ok(own > 0, 'no damaged file took the refinement path');
});

// Where the CPU has BMI2 the tests above ran its decoder; this runs them again on the plain one
// (what other CPUs get), in a child process since the choice is made once at load.
const plainRun = process.env.IMAGE_OPS_PLAIN_REFINE === '1';
test('the plain decoder (no BMI2) passes the same tests', { skip: built.skip || (plainRun && 'this is that run') }, () => {
  // Without the runner's NODE_TEST_CONTEXT the child reports in plain TAP.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--test', fileURLToPath(import.meta.url)], {
    env: { ...env, IMAGE_OPS_PLAIN_REFINE: '1' },
    encoding: 'utf8',
  });
  assert.match(out, /# pass 3\n/);
  assert.match(out, /# fail 0\n/);
});
