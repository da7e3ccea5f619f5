// Safe mode and the metadata of the results come from one read of each result's row.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runKnn, type KnnContext } from '../embeddings-indices-hosting/back/knn.ts';
import type { ServedIndex } from '../embeddings-indices-hosting/back/indices.ts';
import type { MetadataRow, MetadataSource } from '../embeddings-indices-hosting/back/metadata-store.ts';
import { Metrics } from '../embeddings-indices-hosting/back/metrics.ts';
import { SearchThreads } from '../embeddings-indices-hosting/back/search-threads.ts';
import { createIndex, faissAvailable } from '../lib/faiss/index.ts';

const available = faissAvailable();
const skip = available.ok ? false : available.reason;

test('safe mode reads each row once; NSFW rows dropped; only columns_to_return come back', { skip }, async () => {
  const d = 8;
  const n = 30;
  const x = new Float32Array(n * d);
  for (let i = 0; i < n; i++) x[i * d + (i % d)] = 1 - i / 100; // id i nearest axis i % d, by rank
  const idx = createIndex(d, 'Flat', 'ip');
  await idx.add(x, n);
  const calls: Array<{ ids: number[]; columns: string[] }> = [];
  const rows = (id: number): MetadataRow => ({ caption: `row ${id}`, url: `https://example.com/${id}.jpg`, NSFW: id % 3 === 0 ? 'NSFW' : 'UNLIKELY' });
  const metadata: MetadataSource = {
    columns: ['caption', 'url', 'NSFW'],
    rowCount: n,
    get: async (ids, columns) => {
      calls.push({ ids: [...ids], columns: [...columns] });
      return new Map(ids.map((id) => [id, Object.fromEntries(columns.map((c) => [c, rows(id)[c]!]))]));
    },
    close: () => undefined,
  };
  const served = { name: 'x', settings: {} as ServedIndex['settings'], image: idx, text: null, metadata, encoder: null, columns: ['caption', 'url'], dim: d } as ServedIndex;
  const ctx: KnnContext = { http: {} as KnnContext['http'], metrics: new Metrics(), limits: { maxResultIds: 100, maxImageBytes: 1, imageUrlTimeoutMs: 1 }, searchThreads: new SearchThreads(1) };
  const query = new Float32Array(d).fill(1 / Math.sqrt(d));
  const ask = (useSafetyModel: boolean): ReturnType<typeof runKnn> =>
    runKnn({ index: served, modality: 'image', numImages: 10, numResultIds: 20, text: null, image: null, imageUrl: null, embedding: query, deduplicate: false, useSafetyModel }, ctx);
  try {
    const safe = await ask(true);
    assert.equal(calls.length, 1, 'one read of the rows per query');
    assert.deepEqual(calls[0]!.columns.sort(), ['NSFW', 'caption', 'url']);
    assert.equal(calls[0]!.ids.length, 20);
    // clip-retrieval's shape: every result left, metadata for the first num_images only
    assert.equal(safe.length, 20 - 7, 'the 7 ids of the 20 tagged NSFW are dropped');
    safe.forEach((r, i) => {
      assert.notEqual(r.id % 3, 0, `id ${r.id} is tagged NSFW`);
      assert.deepEqual(Object.keys(r).sort(), i < 10 ? ['caption', 'id', 'similarity', 'url'] : ['id', 'similarity']);
      if (i < 10) assert.equal(r.caption, `row ${r.id}`);
    });
    calls.length = 0;
    const all = await ask(false);
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0]!.columns, ['caption', 'url']);
    assert.equal(calls[0]!.ids.length, 10, 'without safe mode: only the first num_images rows are read');
    assert.ok(all.some((r) => r.id % 3 === 0));
  } finally {
    idx.dispose();
  }
});
