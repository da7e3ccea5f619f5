// A small budget gives an OPQ + IVF + PQ index: built, tuned, within the budget, and searchable.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { faissAvailable } from '../lib/faiss/index.ts';
import { writeNpy } from '../lib/npy.ts';
import { clusteredVectors } from './helpers/clustered-vectors.ts';
import { runCli } from './helpers/cli-process.ts';

const available = faissAvailable();
const dir = await mkdtemp(join(tmpdir(), 'index-pq-'));
after(() => rm(dir, { recursive: true, force: true }));

test('budget 1M for 12,000 x 32: OPQ24_48,IVF512,PQ24x8, index within the budget, tuned nprobe, recall reported', { skip: available.ok ? false : available.reason, timeout: 180_000 }, async () => {
  const d = 32;
  const x = clusteredVectors(12_000, d, { clusters: 60, seed: 9 });
  await writeNpy(join(dir, 'emb', 'text_emb', 'text_emb_0.npy'), 'float16', d, x.subarray(0, 6000 * d));
  await writeNpy(join(dir, 'emb', 'text_emb', 'text_emb_1.npy'), 'float16', d, x.subarray(6000 * d));
  const out = join(dir, 'idx');
  let r = await runCli('embeddings-indices-hosting/run.ts', ['index', '--embeddings-folder', join(dir, 'emb'), '--index-folder', out, '--max-index-memory-usage', '1M', '--nb-cores', '2', '--tuning-queries', '200']);
  assert.equal(r.code, 0, r.stderr);
  const infos = JSON.parse(readFileSync(join(out, 'text.json'), 'utf8')) as Record<string, number | string>;
  assert.equal(infos.index_key, 'OPQ24_48,IVF512,PQ24x8');
  assert.match(String(infos.index_param), /^nprobe=\d+,ht=2048$/);
  assert.ok((infos['size in bytes'] as number) <= 1024 * 1024, `size ${infos['size in bytes']}`);
  assert.ok((infos['reconstruction error %'] as number) > 0, 'a PQ index has a codec and some reconstruction error');
  assert.ok((infos['compression ratio'] as number) > 1.4, `compression ${infos['compression ratio']}`); // 128 raw bytes -> 32 per vector, plus centroids
  r = await runCli('embeddings-indices-hosting/run.ts', ['score', '--embeddings-folder', join(dir, 'emb'), '--index-folder', out, '--queries', '200', '--nb-cores', '2']);
  assert.equal(r.code, 0, r.stderr);
  const s = (JSON.parse(readFileSync(join(out, 'score.json'), 'utf8')) as { text: Record<string, number> }).text;
  assert.ok(s['recall@10']! > 0.5, `recall@10 ${s['recall@10']}`);
});
