// searchAndReconstruct (faiss' search_and_reconstruct) against search + reconstruct(id) on each index
// family the index stage builds, and the back end's fallback to the plain search where an index
// refuses it.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { dedupPositions, runKnn, searchWithVectors, type KnnContext } from '../embeddings-indices-hosting/back/knn.ts';
import type { ServedIndex } from '../embeddings-indices-hosting/back/indices.ts';
import { Metrics } from '../embeddings-indices-hosting/back/metrics.ts';
import { SearchThreads } from '../embeddings-indices-hosting/back/search-threads.ts';
import { createIndex, faissAvailable, readIndex, writeIndexAtomic, type NativeIndex, type SearchResult } from '../lib/faiss/index.ts';
import { clusteredVectors } from './helpers/clustered-vectors.ts';

const available = faissAvailable();
const skip = available.ok ? false : available.reason;
const dir = await mkdtemp(join(tmpdir(), 'faiss-sr-test-'));
after(() => rm(dir, { recursive: true, force: true }));

const d = 32;
const n = 4000;
const x = clusteredVectors(n, d, { clusters: 40, seed: 11 });
// Queries near, not on, the data: no exact ties between two ids.
const nq = 15;
const queries = clusteredVectors(nq, d, { clusters: 40, seed: 11 }).map((v, i) => v + 0.01 * Math.sin(i));
const k = 12;

async function assertMatchesSearch(idx: NativeIndex, what: string): Promise<void> {
  const plain = await idx.search(queries, nq, k, 1);
  const sr = await idx.searchAndReconstruct(queries, nq, k, 1);
  assert.deepEqual(Array.from(sr.labels), Array.from(plain.labels), `${what}: labels`);
  assert.deepEqual(Array.from(sr.distances), Array.from(plain.distances), `${what}: distances`);
  assert.equal(sr.vectors.length, nq * k * d);
  let maxDiff = 0;
  for (let r = 0; r < nq * k; r++) {
    const id = sr.labels[r]!;
    assert.ok(id >= 0, `${what}: ${k} results exist`);
    const want = idx.reconstruct(id);
    for (let j = 0; j < d; j++) maxDiff = Math.max(maxDiff, Math.abs(sr.vectors[r * d + j]! - want[j]!));
  }
  assert.ok(maxDiff <= 1e-6, `${what}: vectors equal reconstruct(id) (max difference ${maxDiff})`);
}

test('searchAndReconstruct: same ids and distances as search, vectors as reconstruct(id), on Flat, IVF-Flat, IVF-PQ, OPQ+IVF-PQ, IVF-HNSW and HNSW', { skip }, async () => {
  for (const key of ['Flat', 'IVF32,Flat', 'IVF32,PQ8x8', 'OPQ8_32,IVF32,PQ8x8', 'IVF32_HNSW16,Flat', 'HNSW16']) {
    const idx = createIndex(d, key, 'ip');
    idx.configureTraining({ pqNiter: 8, opqNiter: 3, opqNiterPq: 2 });
    if (!idx.isTrained) await idx.train(x, n, 1);
    await idx.add(x, n, 1);
    if (key.startsWith('IVF') || key.startsWith('OPQ')) idx.setParameters('nprobe=4');
    await assertMatchesSearch(idx, key);
    // the encoded vector is what comes back: exact for Flat, an approximation for PQ
    const first = await idx.searchAndReconstruct(x.subarray(0, d), 1, 1, 1);
    let err = 0;
    const own = idx.reconstruct(first.labels[0]!);
    for (let j = 0; j < d; j++) err = Math.max(err, Math.abs(first.vectors[j]! - own[j]!));
    assert.equal(err, 0, `${key}: the top result's vector`);
    idx.dispose();
  }
});

/** IVF16,Flat over x at `nprobe`, and the same index written to `file` and read back memory-mapped. */
async function ivfAndMapped(nprobe: number, file: string): Promise<{ idx: NativeIndex; mapped: NativeIndex }> {
  const idx = createIndex(d, 'IVF16,Flat', 'l2');
  await idx.train(x, n, 1);
  await idx.add(x, n, 1);
  idx.setParameters(`nprobe=${nprobe}`);
  const path = join(dir, file);
  await writeIndexAtomic(idx, path);
  return { idx, mapped: await readIndex(path, { mmap: true }) };
}

test('searchAndReconstruct on a memory-mapped IVF index; -1 results come back as NaN rows', { skip }, async () => {
  const { mapped } = await ivfAndMapped(3, 'ivf.index');
  await assertMatchesSearch(mapped, 'mmap IVF16,Flat');
  mapped.dispose();

  const small = createIndex(d, 'Flat', 'ip');
  await small.add(x.subarray(0, 3 * d), 3);
  const r = await small.searchAndReconstruct(queries, 1, 5);
  assert.deepEqual(Array.from(r.labels.subarray(3)), [-1, -1]);
  assert.deepEqual(Array.from(r.vectors.subarray(0, d)), Array.from(small.reconstruct(r.labels[0]!)));
  assert.ok(r.vectors.subarray(3 * d).every((v) => Number.isNaN(v)));
  assert.throws(() => small.searchAndReconstruct(queries.subarray(0, d - 1), 1, 5), /need 32/);
  assert.throws(() => small.searchAndReconstruct(queries, 1, 0), /k must be >= 1/);
});

/** `real` with its searchAndReconstruct and searchAndDedup (or only the methods named) replaced: a
 * NativeIndex stand-in for faiss' refusals, which reach both; null: as an addon without them. */
function withSearchAndReconstruct(real: NativeIndex, sr: (() => Promise<never>) | null, methods = ['searchAndReconstruct', 'searchAndDedup']): NativeIndex {
  return new Proxy(real, {
    get(target, prop) {
      if (methods.includes(prop as string)) return sr ?? undefined;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

test('back: searchWithVectors uses searchAndDedup (up to 256 results) or searchAndReconstruct, and falls back to search (once per index) where they are not implemented', { skip }, async () => {
  const idx = createIndex(d, 'IVF16,Flat', 'ip');
  await idx.train(x, n, 1);
  await idx.add(x, n, 1);
  idx.setParameters('nprobe=2');
  const q = queries.subarray(0, d);
  const plain: SearchResult = await idx.search(q, 1, k, 1);
  const deduped = await searchWithVectors(idx, q, k);
  assert.ok(deduped.keep && deduped.vectors === undefined, 'the near-duplicate rule ran in the search job');
  assert.deepEqual(Array.from(deduped.labels), Array.from(plain.labels));
  const sr = await idx.searchAndReconstruct(q, 1, k, 1);
  const unit = sr.vectors.map((v, i) => v / Math.hypot(...sr.vectors.subarray(i - (i % d), i - (i % d) + d)));
  assert.deepEqual(Array.from(deduped.keep), await dedupPositions(unit, k, d));
  const withVectors = await searchWithVectors(withSearchAndReconstruct(idx, null, ['searchAndDedup']), q, k);
  assert.ok(withVectors.vectors && withVectors.vectors.length === k * d, 'without searchAndDedup, vectors come with the search');
  assert.deepEqual(Array.from(withVectors.labels), Array.from(plain.labels));
  const many = await searchWithVectors(idx, q, 300);
  assert.ok(many.vectors && many.keep === undefined, 'over 256 results: searchAndReconstruct');

  let calls = 0;
  const proxy = withSearchAndReconstruct(idx, () => {
    calls++;
    return Promise.reject(new Error('Error in virtual void faiss::Index::reconstruct(idx_t, float*) const: reconstruct not implemented for this type of index'));
  });
  for (let i = 0; i < 3; i++) {
    const r = await searchWithVectors(proxy, q, k);
    assert.equal(r.vectors, undefined);
    assert.deepEqual(Array.from(r.labels), Array.from(plain.labels));
    assert.deepEqual(Array.from(r.distances), Array.from(plain.distances));
  }
  assert.equal(calls, 1, 'the refusal is remembered');

  // any other failure is not hidden
  const broken = withSearchAndReconstruct(idx, () => Promise.reject(new Error('faiss index was disposed')));
  await assert.rejects(searchWithVectors(broken, q, k), /disposed/);
});

test('back: deduplicated /knn-service results are identical with searchAndDedup, searchAndReconstruct and the reconstruct path', { skip }, async () => {
  // tight clusters: many results are near duplicates (inner product > 0.94) of a better-ranked one
  const dd = 64;
  const data = clusteredVectors(3000, dd, { clusters: 30, spread: 0.25, seed: 5 });
  const idx = createIndex(dd, 'IVF16,Flat', 'ip');
  await idx.train(data, 3000, 1);
  await idx.add(data, 3000, 1);
  idx.setParameters('nprobe=4');
  const metadata = { columns: [], rowCount: 3000, get: async () => new Map(), close: () => undefined };
  const served = { name: 'x', settings: {} as ServedIndex['settings'], image: idx, text: null, metadata, encoder: null, columns: [], dim: dd };
  const ctx = { http: {} as KnnContext['http'], metrics: new Metrics(), limits: { maxResultIds: 1000, maxImageBytes: 1, imageUrlTimeoutMs: 1 }, searchThreads: new SearchThreads(1) };
  const viaReconstruct = withSearchAndReconstruct(idx, () => Promise.reject(new Error('reconstruct not implemented')));
  const viaSearchAndReconstruct = withSearchAndReconstruct(idx, null, ['searchAndDedup']);
  let deduplicated = 0;
  for (let qi = 0; qi < 5; qi++) {
    const query = data.slice(qi * 97 * dd, (qi * 97 + 1) * dd);
    const ask = (image: NativeIndex): ReturnType<typeof runKnn> =>
      runKnn({ index: { ...served, image }, modality: 'image', numImages: 200, numResultIds: 200, text: null, image: null, imageUrl: null, embedding: query, deduplicate: true, useSafetyModel: false }, ctx);
    const a = await ask(idx); // searchAndDedup: the rule in the native job
    const b = await ask(viaReconstruct); // search, reconstruct(id), dedupPositions
    const c = await ask(viaSearchAndReconstruct); // searchAndReconstruct, dedupPositions
    assert.deepEqual(a, b, `query ${qi}`);
    assert.deepEqual(c, b, `query ${qi}`);
    if (a.length < 200) deduplicated++;
  }
  assert.equal(deduplicated, 5, 'every query had near duplicates to remove');
});

test('back: a lone query gets every core on an IVF index (its lists split among them), with the same results as on one; concurrent ones share them', { skip }, async () => {
  const { idx, mapped } = await ivfAndMapped(8, 'ivf-split.index');
  assert.match(mapped.describe(), /nprobe=8/, 'nprobe is kept in the file');
  const hnsw = createIndex(d, 'HNSW8', 'l2');
  await hnsw.add(x, n, 1);
  try {
    const st = new SearchThreads(4);
    for (const ivf of [idx, mapped]) {
      const before = await Promise.all([ivf.search(queries, nq, k, 1), ivf.searchAndReconstruct(queries, nq, k, 1)]);
      assert.equal(st.enableSplitting(ivf), true);
      for (let qi = 0; qi < nq; qi++) {
        const q = queries.subarray(qi * d, (qi + 1) * d);
        for (const [label, search] of [['search', (t: number) => ivf.search(q, 1, k, t)], ['searchAndReconstruct', (t: number) => ivf.searchAndReconstruct(q, 1, k, t)]] as const) {
          let given = 0;
          const r = await st.run(ivf, (t) => ((given = t), search(t)));
          assert.equal(given, 4, 'a lone query gets the 4 cores');
          const want = before[label === 'search' ? 0 : 1];
          assert.deepEqual(Array.from(r.labels), Array.from(want.labels.subarray(qi * k, (qi + 1) * k)), `${label} query ${qi}: labels`);
          assert.deepEqual(Array.from(r.distances), Array.from(want.distances.subarray(qi * k, (qi + 1) * k)), `${label} query ${qi}: distances`);
        }
      }
      // Three in flight: 4 / 1, then 4 / 2, then 4 / 3 cores, as each starts while the others run.
      const given: number[] = [];
      let release!: () => void;
      const gate = new Promise<void>((res) => (release = res));
      const runs = [0, 1, 2].map(() => st.run(ivf, async (t) => (given.push(t), await gate, ivf.search(queries, 1, k, t))));
      release();
      await Promise.all(runs);
      assert.deepEqual(given, [4, 2, 1]);
    }
    assert.equal(st.enableSplitting(hnsw), false, 'HNSW: no split');
    let given = 0;
    await st.run(hnsw, (t) => ((given = t), hnsw.search(queries, 1, k, t)));
    assert.equal(given, 1);
    assert.equal(new SearchThreads(1).enableSplitting(createIndex(d, 'IVF4,Flat', 'l2')), false, 'one core: nothing to split');
  } finally {
    mapped.dispose();
    hnsw.dispose();
    idx.dispose();
  }
});
