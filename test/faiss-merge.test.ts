// addWithIds + mergeFrom: the distributed build (one trained empty index, parts added with global
// ids, then merged) gives the same index as adding everything to one.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createIndex, faissAvailable, readIndex, writeIndexAtomic, type NativeIndex } from '../lib/faiss/index.ts';
import { clusteredVectors } from './helpers/clustered-vectors.ts';

const available = faissAvailable();
const skip = available.ok ? false : available.reason;
const dir = await mkdtemp(join(tmpdir(), 'faiss-merge-test-'));
after(() => rm(dir, { recursive: true, force: true }));

const d = 32;
const n = 6000;
const x = clusteredVectors(n, d, { clusters: 60, seed: 21 });
const nq = 30;
const queries = clusteredVectors(nq, d, { clusters: 60, seed: 22 });

const range = (from: number, to: number): Float64Array => Float64Array.from({ length: to - from }, (_, i) => from + i);

async function trainedEmpty(key: string, path: string): Promise<void> {
  const idx = createIndex(d, key, 'ip');
  idx.configureTraining({ pqNiter: 8, opqNiter: 3, opqNiterPq: 2 });
  await idx.train(x, n, 1);
  await writeIndexAtomic(idx, path);
  idx.dispose();
}

async function searchAll(idx: NativeIndex): Promise<{ labels: number[]; distances: number[] }> {
  idx.setParameters('nprobe=6');
  const r = await idx.search(queries, nq, 20, 1);
  return { labels: Array.from(r.labels), distances: Array.from(r.distances) };
}

for (const key of ['IVF32,Flat', 'IVF32,PQ8x8', 'OPQ8_32,IVF32_HNSW16,PQ8x8']) {
  test(`${key}: parts added with global ids from one trained empty index, merged, equal one index built from all vectors`, { skip }, async () => {
    const empty = join(dir, `${key}.empty.index`);
    await trainedEmpty(key, empty);
    const whole = await readIndex(empty);
    await whole.add(x, n, 1);

    // three workers: uneven contiguous row ranges, the middle one added by ids out of order
    const cuts = [0, 2500, 4100, n];
    const parts: NativeIndex[] = [];
    for (let p = 0; p < 3; p++) {
      const part = await readIndex(empty);
      const [from, to] = [cuts[p]!, cuts[p + 1]!];
      if (p === 1) {
        const half = from + Math.floor((to - from) / 2);
        await part.addWithIds(x.subarray(half * d, to * d), to - half, range(half, to));
        await part.addWithIds(x.subarray(from * d, half * d), half - from, range(from, half));
      } else {
        await part.addWithIds(x.subarray(from * d, to * d), to - from, range(from, to), 1);
      }
      assert.equal(part.ntotal, to - from);
      const written = join(dir, `${key}.part${p}.index`);
      await writeIndexAtomic(part, written);
      part.dispose();
      parts.push(await readIndex(written));
    }
    const merged = parts[0]!;
    await merged.mergeFrom(parts[1]!);
    await merged.mergeFrom(parts[2]!);
    assert.equal(merged.ntotal, n);
    assert.deepEqual([parts[1]!.ntotal, parts[2]!.ntotal], [0, 0], 'merged parts are left empty');

    // faiss' result heaps order equal distances by id, so the insertion order inside lists does not show
    assert.deepEqual(await searchAll(merged), await searchAll(whole));
    for (const id of [0, 2499, 2500, 4099, 4100, n - 1]) assert.deepEqual(Array.from(merged.reconstruct(id)), Array.from(whole.reconstruct(id)), `id ${id}`);
  });
}

test('mergeFrom with idOffset: parts added with plain add (ids from 0) merge into global ids', { skip }, async () => {
  const empty = join(dir, 'offset.empty.index');
  await trainedEmpty('IVF16,Flat', empty);
  const whole = await readIndex(empty);
  await whole.add(x, n);
  const a = await readIndex(empty);
  const b = await readIndex(empty);
  await a.add(x.subarray(0, 1000 * d), 1000);
  await b.add(x.subarray(1000 * d), n - 1000);
  await a.mergeFrom(b, 1000);
  assert.deepEqual(await searchAll(a), await searchAll(whole));
});

test('mergeFrom and addWithIds refuse what faiss cannot do, with a JS error', { skip }, async () => {
  const a = createIndex(d, 'IVF16,Flat', 'ip');
  const b = createIndex(d, 'IVF16,Flat', 'ip');
  await a.train(x, n, 1);
  await b.train(x.subarray(d), n - 1, 1); // another training: other centroids
  await b.add(x, 100);
  await assert.rejects(a.mergeFrom(b), /coarse quantizers should be the same/);
  await assert.rejects(a.mergeFrom(createIndex(d, 'IVF16,PQ8x8', 'ip')), /./);
  assert.throws(() => a.mergeFrom(a), /into itself/);
  assert.throws(() => a.mergeFrom({} as NativeIndex), /expected a faiss index/);

  const path = join(dir, 'a.index');
  const c = createIndex(d, 'IVF16,Flat', 'ip');
  await c.train(x, n, 1);
  await writeIndexAtomic(c, path);
  const same = await readIndex(path);
  await same.add(x, 50);
  const mapped = await readIndex(path, { mmap: true });
  await assert.rejects(mapped.mergeFrom(same), /must be in memory/);
  await assert.rejects(same.mergeFrom(mapped), /must be in memory/);
  assert.equal(same.ntotal, 50, 'nothing merged');

  assert.throws(() => c.addWithIds(x, 2, range(0, 3)), /3 ids for 2 vectors/);
  assert.throws(() => c.addWithIds(x, 2, Float64Array.of(0, -1)), /not a non-negative integer/);
  assert.throws(() => c.addWithIds(x, 2, Float64Array.of(0, 1.5)), /not a non-negative integer/);
  const hnsw = createIndex(d, 'HNSW8', 'ip');
  await assert.rejects(hnsw.addWithIds(x, 2, range(0, 2)), /not implemented|not supported/i);
  const untrained = createIndex(d, 'IVF16,Flat', 'ip');
  await assert.rejects(untrained.addWithIds(x, 2, range(0, 2)), /not trained/);
});

test('IDMap,Flat: addWithIds works; searchAndReconstruct is refused (no reconstruct) as a rejected promise', { skip }, async () => {
  const idx = createIndex(d, 'IDMap,Flat', 'ip');
  await idx.addWithIds(x.subarray(0, 100 * d), 100, range(1000, 1100));
  const r = await idx.search(x.subarray(5 * d, 6 * d), 1, 1);
  assert.equal(r.labels[0], 1005);
  await assert.rejects(idx.searchAndReconstruct(x.subarray(5 * d, 6 * d), 1, 1), /not implemented/);
});
