// IVF-SQfp16 with our float16 list scanner (lib/faiss/ivf-sq-fp16.cc): on float16 vectors it holds
// them exactly and gives IVF-Flat's results bit for bit, in memory and memory-mapped, for search,
// searchAndReconstruct and a lone query split over threads; the file is a plain faiss IVF-SQfp16.
import assert from 'node:assert/strict';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createIndex, faissAvailable, loadFaiss, readIndex, writeIndexAtomic, type Metric, type NativeIndex } from '../lib/faiss/index.ts';
import { float16ToFloat32Array, float32ToFloat16Array } from '../lib/npy.ts';
import { clusteredVectors } from './helpers/clustered-vectors.ts';

const available = faissAvailable();
const skip = available.ok ? false : available.reason;
const dir = await mkdtemp(join(tmpdir(), 'faiss-sqfp16-test-'));
after(() => rm(dir, { recursive: true, force: true }));

const cpuHasF16c = ((): boolean => {
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
    return ['avx2', 'fma', 'f16c'].every((f) => flags.includes(f));
  } catch {
    return false;
  }
})();

// 100 dims: four 32-wide steps, no 8-wide step, 4 left over for the scalar tail
const d = 100;
const n = 6000;
const asFloat16 = (x: Float32Array): Float32Array => float16ToFloat32Array(float32ToFloat16Array(x));
const x = asFloat16(clusteredVectors(n, d, { clusters: 50, seed: 21 }));
const nq = 20;
const queries = clusteredVectors(nq, d, { clusters: 50, seed: 21 }).map((v, i) => v + 0.01 * Math.cos(i));
const k = 15;

async function built(key: string, metric: Metric): Promise<NativeIndex> {
  const idx = createIndex(d, key, metric);
  await idx.train(x, n, 1);
  await idx.add(x, n, 1);
  return idx;
}

test('the float16 scanner is in use where the CPU has AVX2 + FMA + F16C', { skip }, () => {
  assert.equal(loadFaiss().fastFp16Scan, cpuHasF16c);
});

test('IVF-SQfp16 on float16 vectors: IVF-Flat\'s labels and distances exactly, vectors held exactly, in memory and memory-mapped', { skip }, async () => {
  for (const metric of ['ip', 'l2'] as const) {
    const flat = await built('IVF32,Flat', metric);
    const sq = await built('IVF32,SQfp16', metric);
    try {
      // same trained centroids are not guaranteed across two trainings: give both the same lists
      // by probing them all, so the comparison is of the scan alone
      flat.setParameters('nprobe=32');
      sq.setParameters('nprobe=32');
      const path = join(dir, `sq-${metric}.index`);
      await writeIndexAtomic(sq, path);
      assert.ok((await stat(path)).size < 2 * n * d + 8 * n + 4 * 32 * d + 4096, 'two bytes per value');
      const mapped = await readIndex(path, { mmap: true });
      mapped.setParameters('nprobe=32');
      try {
        const want = await flat.search(queries, nq, k, 1);
        for (const [what, idx] of [['in memory', sq], ['memory-mapped', mapped]] as const) {
          const got = await idx.search(queries, nq, k, 1);
          assert.deepEqual(Array.from(got.labels), Array.from(want.labels), `${metric} ${what}: labels`);
          assert.deepEqual(Array.from(got.distances), Array.from(want.distances), `${metric} ${what}: distances`);
          const sr = await idx.searchAndReconstruct(queries, nq, k, 1);
          assert.deepEqual(Array.from(sr.labels), Array.from(want.labels), `${metric} ${what}: searchAndReconstruct labels`);
          for (let r = 0; r < nq * k; r++) {
            const id = sr.labels[r]!;
            assert.deepEqual(Array.from(sr.vectors.subarray(r * d, (r + 1) * d)), Array.from(x.subarray(id * d, (id + 1) * d)), `${metric} ${what}: vector of ${id} held exactly`);
          }
          // a lone query with its lists split over 3 threads
          assert.equal(idx.splitQueriesOverLists(true), true);
          for (let qi = 0; qi < nq; qi++) {
            const one = await idx.search(queries.subarray(qi * d, (qi + 1) * d), 1, k, 3);
            assert.deepEqual(Array.from(one.labels), Array.from(want.labels.subarray(qi * k, (qi + 1) * k)), `${metric} ${what}: split query ${qi}`);
          }
        }
        assert.match(mapped.describe(), /IndexIVF\(nlist=32/);
      } finally {
        mapped.dispose();
      }
    } finally {
      flat.dispose();
      sq.dispose();
    }
  }
});

test('an 8-bit scan copy (attachSq8Copy) gives the float16 scan\'s results bit for bit; it is written once, rewritten when stale, and really scanned', { skip: skip || (!cpuHasF16c && 'no AVX2 + F16C: no float16 scanner') }, async () => {
  const sq = await built('IVF32,SQfp16', 'ip');
  const path = join(dir, 'sq8.index');
  const copy = join(dir, 'sq8.sq8');
  await writeIndexAtomic(sq, path);
  sq.dispose();
  const plain = await readIndex(path, { mmap: true });
  const withCopy = await readIndex(path, { mmap: true });
  const inMemory = await readIndex(path);
  try {
    assert.equal(await withCopy.attachSq8Copy(copy, path), 'built');
    assert.equal((await stat(copy)).size < n * d + 64 * 32 + 8192, true, 'one byte per value');
    assert.equal(await inMemory.attachSq8Copy(copy, path), 'attached', 'a second index on the same file reuses the copy');
    for (const idx of [plain, withCopy, inMemory]) idx.setParameters('nprobe=8');
    const want = await plain.search(queries, nq, k, 1);
    const wantSr = await plain.searchAndReconstruct(queries, nq, k, 1);
    for (const idx of [withCopy, inMemory]) {
      const got = await idx.search(queries, nq, k, 1);
      assert.deepEqual(Array.from(got.labels), Array.from(want.labels));
      assert.deepEqual(Array.from(got.distances), Array.from(want.distances));
      const sr = await idx.searchAndReconstruct(queries, nq, k, 1);
      assert.deepEqual(Array.from(sr.labels), Array.from(wantSr.labels));
      assert.deepEqual(Array.from(sr.vectors), Array.from(wantSr.vectors));
      // a lone query's lists split over 3 threads
      assert.equal(idx.splitQueriesOverLists(true), true);
      for (let qi = 0; qi < nq; qi++) {
        const one = await idx.search(queries.subarray(qi * d, (qi + 1) * d), 1, k, 3);
        assert.deepEqual(Array.from(one.distances), Array.from(want.distances.subarray(qi * k, (qi + 1) * k)), `split query ${qi}`);
      }
    }
    // The copy is what is scanned: with its codes zeroed (through the file, which the index maps)
    // the 8-bit scores are wrong and the results change.
    const codesStart = Math.ceil((40 + 32 * 8 + 2 * d * 4) / 64) * 64; // header, list sizes, vmin, step
    const fd = await open(copy, 'r+');
    await fd.write(Buffer.alloc((await stat(copy)).size - codesStart), 0, undefined, codesStart);
    await fd.close();
    const broken = await withCopy.search(queries, nq, k, 1);
    assert.notDeepEqual(Array.from(broken.labels), Array.from(want.labels));
    // A changed index file makes the copy stale: written again, and the results are right again.
    await writeIndexAtomic(inMemory, path);
    const again = await readIndex(path, { mmap: true });
    try {
      assert.equal(await again.attachSq8Copy(copy, path), 'built');
      again.setParameters('nprobe=8');
      assert.deepEqual(Array.from((await again.search(queries, nq, k, 1)).distances), Array.from(want.distances));
    } finally {
      again.dispose();
    }
    // Not applicable: L2, and other index types; nothing is written.
    const l2 = await built('IVF32,SQfp16', 'l2');
    const flat = await built('IVF32,Flat', 'ip');
    assert.match(await l2.attachSq8Copy(join(dir, 'l2.sq8'), path), /^unsupported: not inner product/);
    assert.match(await flat.attachSq8Copy(join(dir, 'flat.sq8'), path), /^unsupported/);
    l2.dispose();
    flat.dispose();
  } finally {
    plain.dispose();
    withCopy.dispose();
    inMemory.dispose();
  }
});
