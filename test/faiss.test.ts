import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createFloatMatrix, createIndex, faissAvailable, readIndex, writeIndexAtomic } from '../lib/faiss/index.ts';
import { clusteredVectors } from './helpers/clustered-vectors.ts';

const available = faissAvailable();
const skip = available.ok ? false : available.reason;
const dir = await mkdtemp(join(tmpdir(), 'faiss-test-'));
after(() => rm(dir, { recursive: true, force: true }));

const d = 32;
const n = 5000;
const x = clusteredVectors(n, d, { clusters: 50, seed: 7 });
const queries = x.subarray(0, 20 * d);

test('Flat inner product search finds each vector itself first; batched search off the JS thread', { skip }, async () => {
  const idx = createIndex(d, 'Flat', 'ip');
  assert.deepEqual([idx.d, idx.metric, idx.isTrained, idx.ntotal], [d, 'ip', true, 0]);
  for (let i = 0; i < n; i += 1000) await idx.add(x.subarray(i * d, (i + 1000) * d), 1000);
  assert.equal(idx.ntotal, n);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const r = await idx.search(x, n, 3, 2);
  clearInterval(timer);
  for (let q = 0; q < n; q += 97) assert.equal(r.labels[q * 3], q);
  assert.ok(Math.abs(r.distances[0]! - 1) < 1e-5, 'unit vectors: self inner product is 1');
  const rec = idx.reconstruct(42);
  assert.deepEqual(Array.from(rec), Array.from(x.subarray(42 * d, 43 * d)));
  assert.equal(idx.reconstruct(10, 3).length, 3 * d);
  assert.throws(() => idx.reconstruct(n), /out of range/);
  idx.dispose();
  assert.throws(() => idx.ntotal, /disposed/);
});

test('IVF: train, add, ParameterSpace string, write, read back plain and memory-mapped: same results', { skip }, async () => {
  const idx = createIndex(d, 'IVF32,Flat', 'ip');
  assert.equal(idx.isTrained, false);
  await assert.rejects(idx.add(x, n), /not trained/);
  await idx.train(x, n);
  await idx.add(x, n);
  idx.setParameters('nprobe=4');
  assert.match(idx.describe(), /IndexIVF\(nlist=32,nprobe=4,metric=ip/);
  assert.throws(() => idx.setParameters('efSearch=16'), /could not set parameter efSearch/);
  const want = await idx.search(queries, 20, 10);
  const path = join(dir, 'ivf.index');
  await writeIndexAtomic(idx, path);
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.tmp-')), []);
  for (const mmap of [false, true]) {
    const back = await readIndex(path, { mmap });
    assert.equal(back.ntotal, n);
    assert.match(back.describe(), /nprobe=4/, 'search parameters are stored in the file');
    const got = await back.search(queries, 20, 10);
    assert.deepEqual(Array.from(got.labels), Array.from(want.labels), `mmap=${mmap}`);
    back.dispose();
  }
});

test('bad input is a JS error, never a crash: factory strings, truncated and corrupt files, wrong sizes', { skip }, async () => {
  assert.throws(() => createIndex(d, 'NotAnIndex7', 'ip'), /could not parse index string NotAnIndex7/);
  const idx = createIndex(d, 'IVF16,Flat', 'ip');
  await assert.rejects(idx.train(x.subarray(0, 3 * d), 3), /./); // too few points for 16 centroids is a warning in faiss; 3 < 16 throws
  assert.throws(() => idx.search(new Float32Array(d - 1), 1, 1), /need 32/); // argument errors throw at once
  const full = createIndex(d, 'IVF16,Flat', 'ip');
  await full.train(x, n);
  await full.add(x, n);
  const path = join(dir, 'ok.index');
  await writeIndexAtomic(full, path);
  const bytes = readFileSync(path);
  for (const cut of [0.3, 0.9, 0.999]) {
    const t = join(dir, `trunc-${cut}.index`);
    writeFileSync(t, bytes.subarray(0, Math.floor(bytes.length * cut)));
    for (const mmap of [false, true]) {
      await assert.rejects(readIndex(t, { mmap }), (e: Error) => e.message.includes(t) && /truncated|read error/.test(e.message), `cut ${cut} mmap ${mmap}`);
    }
  }
  const junk = join(dir, 'junk.index');
  writeFileSync(junk, Buffer.from('this is not a faiss index at all, just text'));
  await assert.rejects(readIndex(junk), /cannot read faiss index/);
  await assert.rejects(readIndex(join(dir, 'missing.index')), /cannot read faiss index/);
});

test('HNSW and IVF-PQ keys build and search; the codec round trip exists only where faiss has one', { skip }, async () => {
  const hnsw = createIndex(d, 'HNSW16', 'ip');
  hnsw.configureTraining({ efConstruction: 40 });
  await hnsw.add(x.subarray(0, 2000 * d), 2000);
  hnsw.setParameters('efSearch=64');
  assert.match(hnsw.describe(), /IndexHNSW\(M=16,efSearch=64,metric=ip\)/);
  const r = await hnsw.search(queries, 20, 1);
  assert.equal(r.labels[0], 0);
  assert.equal(hnsw.codecRoundTrip(queries, 1), null);
  const pq = createIndex(d, 'IVF16,PQ8x8', 'ip');
  pq.configureTraining({ pqNiter: 10 });
  await pq.train(x, n);
  await pq.add(x, n);
  pq.setParameters('nprobe=16,ht=2048');
  const decoded = pq.codecRoundTrip(queries, 20);
  assert.ok(decoded && decoded.length === 20 * d);
  const r2 = await pq.search(queries, 20, 10);
  let self = 0;
  for (let q = 0; q < 20; q++) if (Array.from(r2.labels.subarray(q * 10, q * 10 + 10)).includes(q)) self++;
  assert.ok(self >= 15, `PQ finds most queries among their own top 10 (${self}/20)`);
});

test('training from a native FloatMatrix (beyond the 4 GiB Float32Array limit) equals training from an array', { skip }, async () => {
  const m = createFloatMatrix(n, d);
  for (let r = 0; r < n; r += 999) m.set(r, x.subarray(r * d, Math.min(n, r + 999) * d));
  assert.equal(m.rows, n);
  assert.throws(() => m.set(n - 1, x.subarray(0, 2 * d)), /out of range/);
  const a = createIndex(d, 'IVF16,Flat', 'ip');
  const b = createIndex(d, 'IVF16,Flat', 'ip');
  await a.train(m, n, 1);
  m.release();
  await b.train(x, n, 1);
  await a.add(x, n);
  await b.add(x, n);
  a.setParameters('nprobe=2');
  b.setParameters('nprobe=2');
  const ra = await a.search(queries, 20, 5);
  const rb = await b.search(queries, 20, 5);
  assert.deepEqual(Array.from(ra.labels), Array.from(rb.labels));
  assert.throws(() => createIndex(8, 'Flat', 'ip').train(m, n), /shape/);
});
