import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  float16BitsToFloat32,
  float32ToFloat16Bits,
  NpyWriter,
  readNpy,
  readNpyHeader,
  readNpyRows,
  writeNpy,
} from '../lib/npy.ts';

const dir = await mkdtemp(join(tmpdir(), 'npy-test-'));
after(() => rm(dir, { recursive: true, force: true }));

/** A python with numpy: the worktree's .bench venv (made by hand, never committed) or the system one. */
function pythonWithNumpy(): string | null {
  for (const py of [join(process.cwd(), '.bench/venv/bin/python'), '/usr/bin/python3', 'python3']) {
    if (py.startsWith('/') && !existsSync(py)) continue;
    const r = spawnSync(py, ['-c', 'import numpy'], { stdio: 'ignore' });
    if (r.status === 0) return py;
  }
  return null;
}

test('float16 conversion matches IEEE half precision (round to nearest even)', () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65520, 0x7c00], // rounds up to infinity
    [1e9, 0x7c00],
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -14, 0x0400], // smallest normal
    [0.1, 0x2e66],
    [1 + 2 ** -11, 0x3c00], // exactly half way: ties to even
    [1 + 3 * 2 ** -11, 0x3c02],
    [Infinity, 0x7c00],
  ];
  for (const [v, bits] of cases) assert.equal(float32ToFloat16Bits(v), bits, `f16(${v})`);
  assert.ok(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(NaN))));
  for (let h = 0; h < 0x7c00; h += 7) assert.equal(float32ToFloat16Bits(float16BitsToFloat32(h)), h);
});

test('float32 and float16 round trip, streamed by rows with a header fixed at close', async () => {
  const rows = 1003;
  const cols = 7;
  const values = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i) * 3);
  for (const dtype of ['float32', 'float16'] as const) {
    const path = join(dir, `rt-${dtype}.npy`);
    const w = await NpyWriter.create(path, dtype, cols);
    for (let r = 0; r < rows; r += 100) await w.append(values.subarray(r * cols, Math.min(rows, r + 100) * cols));
    assert.equal(existsSync(path), false, 'nothing under the final name before close');
    await w.close();
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.startsWith('.tmp-')),
      [],
      'no temporary file left',
    );
    const h = await readNpyHeader(path);
    assert.deepEqual([h.dtype, h.rows, h.cols, h.dataOffset % 64], [dtype, rows, cols, 0]);
    let next = 0;
    let chunks = 0;
    for await (const c of readNpyRows(path, { chunkRows: 64 })) {
      assert.equal(c.start, next);
      assert.ok(c.rows <= 64);
      for (let i = 0; i < c.data.length; i++) {
        const want = values[c.start * cols + i]!;
        const tol = dtype === 'float32' ? 0 : Math.abs(want) * 2 ** -11 + 1e-7;
        assert.ok(Math.abs(c.data[i]! - want) <= tol, `row ${c.start} value ${i}: ${c.data[i]} vs ${want}`);
      }
      next += c.rows;
      chunks++;
    }
    assert.equal(next, rows);
    assert.equal(chunks, Math.ceil(rows / 64));
    const part = [];
    for await (const c of readNpyRows(path, { start: 500, end: 510, chunkRows: 3 })) part.push(c.start);
    assert.deepEqual(part, [500, 503, 506, 509]);
  }
});

test('an aborted writer leaves nothing; an empty array is valid', async () => {
  const path = join(dir, 'aborted.npy');
  const w = await NpyWriter.create(path, 'float16', 4);
  await w.append([1, 2, 3, 4]);
  await w.abort();
  assert.equal(existsSync(path), false);
  const empty = join(dir, 'empty.npy');
  await writeNpy(empty, 'float32', 5, []);
  const r = await readNpy(empty);
  assert.deepEqual([r.rows, r.cols, r.data.length], [0, 5, 0]);
  await assert.rejects(NpyWriter.create(join(dir, 'x.npy'), 'float32', 0), /cols/);
  const w2 = await NpyWriter.create(join(dir, 'y.npy'), 'float32', 3);
  await assert.rejects(w2.append([1, 2]), /whole number of rows/);
  await w2.abort();
});

test('bad files give one clear error naming the file', async () => {
  const path = join(dir, 'trunc.npy');
  await writeNpy(path, 'float32', 4, new Float32Array(40));
  await truncate(path, (await readFile(path)).length - 3);
  await assert.rejects(readNpyHeader(path), (e: Error) => e.message.includes('trunc.npy') && /truncated/.test(e.message));
  const notNpy = join(dir, 'not.npy');
  await writeFile(notNpy, 'hello world, not numpy');
  await assert.rejects(readNpyHeader(notNpy), /not a .npy file/);
  // a float64 file by hand (version 1 header)
  const dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }";
  const total = 128;
  const hdr = Buffer.alloc(total, 0x20);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(hdr);
  hdr.writeUInt16LE(total - 10, 8);
  hdr.write(dict, 10, 'latin1');
  hdr[total - 1] = 0x0a;
  const f8 = join(dir, 'f8.npy');
  await writeFile(f8, Buffer.concat([hdr, Buffer.alloc(8)]));
  await assert.rejects(readNpyHeader(f8), /<f8 is not supported/);
});

test('interop with numpy: files numpy writes (v1 and v2 headers) read back, ours load in numpy', async (t) => {
  const py = pythonWithNumpy();
  if (!py) {
    t.skip('no python with numpy (make one: python3 -m venv .bench/venv && .bench/venv/bin/pip install numpy)');
    return;
  }
  const script = `
import numpy as np, sys
from numpy.lib import format as fmt
d = sys.argv[1]
a = (np.arange(60, dtype=np.float32).reshape(12, 5) / 7 - 3)
np.save(d + '/np32.npy', a)
np.save(d + '/np16.npy', a.astype(np.float16))
with open(d + '/np16v2.npy', 'wb') as f:
    fmt.write_array(f, a.astype(np.float16), version=(2, 0))
ours = np.load(d + '/ours16.npy')
assert ours.dtype == np.float16 and ours.shape == (3, 2), (ours.dtype, ours.shape)
assert ours.tolist() == [[0.5, -1.0], [2.0, 0.0999755859375], [65504.0, 0.0]], ours.tolist()
ours32 = np.load(d + '/ours32.npy', mmap_mode='r')
assert ours32.dtype == np.float32 and ours32.shape == (2, 3) and ours32[1, 2] == np.float32(0.1)
`;
  await writeNpy(join(dir, 'ours16.npy'), 'float16', 2, [0.5, -1, 2, 0.1, 65504, 0]);
  await writeNpy(join(dir, 'ours32.npy'), 'float32', 3, [1, 2, 3, 4, 5, 0.1]);
  const r = spawnSync(py, ['-c', script, dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const expected = Float32Array.from({ length: 60 }, (_, i) => Math.fround(Math.fround(i / 7) - 3)); // float32 arithmetic, as numpy;
  for (const name of ['np32.npy', 'np16.npy', 'np16v2.npy']) {
    const h = await readNpyHeader(join(dir, name));
    assert.equal(h.version, name === 'np16v2.npy' ? 2 : 1, name);
    const got = await readNpy(join(dir, name));
    assert.deepEqual([got.rows, got.cols], [12, 5]);
    for (let i = 0; i < 60; i++) {
      const want = name === 'np32.npy' ? expected[i]! : float16BitsToFloat32(float32ToFloat16Bits(expected[i]!));
      assert.equal(got.data[i], want, `${name}[${i}]`);
    }
  }
});
