// SIGTERM during training stops the build promptly (training runs off the JS thread and faiss
// polls our interrupt flag), with no index under its final name.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { faissAvailable } from '../lib/faiss/index.ts';
import { writeNpy } from '../lib/npy.ts';
import { clusteredVectors } from './helpers/clustered-vectors.ts';
import { startCli } from './helpers/cli-process.ts';

const available = faissAvailable();
const dir = await mkdtemp(join(tmpdir(), 'index-signal-'));
after(() => rm(dir, { recursive: true, force: true }));

test('SIGTERM while training OPQ: exits 143 within seconds, nothing written', { skip: available.ok ? false : available.reason, timeout: 90_000 }, async () => {
  const d = 64;
  await writeNpy(join(dir, 'emb', 'img_emb', 'img_emb_0.npy'), 'float16', d, clusteredVectors(30_000, d, { seed: 3 }));
  // OPQ training at this size takes tens of seconds on Debian's generic faiss build
  const { child, done } = startCli('embeddings-indices-hosting/run.ts', ['index', '--embeddings-folder', join(dir, 'emb'), '--index-folder', join(dir, 'idx'), '--index-key', 'OPQ32_64,IVF256,PQ32x8', '--nb-cores', '1']);
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const deadline = Date.now() + 60_000;
  while (!/training OPQ32_64/.test(stderr) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
  assert.match(stderr, /training OPQ32_64/);
  await new Promise((r) => setTimeout(r, 1000)); // well inside training
  const sent = Date.now();
  child.kill('SIGTERM');
  const r = await done;
  const took = Date.now() - sent;
  assert.equal(r.code, 143, r.stderr);
  assert.match(r.stderr, /interrupted by SIGTERM/);
  assert.ok(took < 10_000, `stopped after ${took} ms`);
  assert.equal(existsSync(join(dir, 'idx', 'image.index')), false);
});
