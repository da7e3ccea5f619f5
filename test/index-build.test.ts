// run.ts index / score end to end on generated clustered embeddings (float16 npy partitions).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { faissAvailable, readIndex } from '../lib/faiss/index.ts';
import { writeNpy } from '../lib/npy.ts';
import { clusteredVectors } from './helpers/clustered-vectors.ts';
import { REPO_ROOT, runCli } from './helpers/cli-process.ts';

const available = faissAvailable();
const skip = available.ok ? false : available.reason;
const RUN = 'embeddings-indices-hosting/run.ts';
const dir = await mkdtemp(join(tmpdir(), 'index-test-'));
after(() => rm(dir, { recursive: true, force: true }));

async function makeEmbeddings(folder: string, x: Float32Array, d: number, parts: number, sub = 'img_emb'): Promise<void> {
  const n = x.length / d;
  const per = Math.ceil(n / parts);
  for (let p = 0; p < parts; p++) {
    await writeNpy(join(folder, sub, `${sub}_${p}.npy`), 'float16', d, x.subarray(p * per * d, Math.min(n, (p + 1) * per) * d));
  }
}

const N = 50_000;
const D = 64;
const x = clusteredVectors(N, D, { clusters: 200, seed: 11 });
const emb = join(dir, 'emb');
const idxFolder = join(dir, 'idx');

test('index + score: HNSW under the default budget, recall@10 >= 0.9, infos fields, mmap read gives the same results, metadata copied', { skip, timeout: 180_000 }, async () => {
  await makeEmbeddings(emb, x, D, 4);
  await mkdir(join(emb, 'metadata'), { recursive: true });
  for (let p = 0; p < 4; p++) await writeFile(join(emb, 'metadata', `metadata_${p}.parquet`), `partition ${p}`);
  const r = await runCli(RUN, ['index', '--embeddings_folder', emb, '--index-folder', idxFolder, '--nb-cores', '2', '--tuning-queries', '300']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /text: no .*text_emb, skipped/);
  const infos = JSON.parse(readFileSync(join(idxFolder, 'image.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(Object.keys(infos), ['index_key', 'index_param', 'index_path', 'size in bytes', 'avg_search_speed_ms', '99p_search_speed_ms', 'reconstruction error %', 'nb vectors', 'vectors dimension', 'compression ratio']);
  assert.equal(infos.index_key, 'HNSW32');
  assert.match(String(infos.index_param), /^efSearch=\d+$/);
  assert.equal(infos['nb vectors'], N);
  assert.equal(infos['vectors dimension'], D);
  assert.equal(infos.index_path, join(idxFolder, 'image.index'));
  assert.equal(readFileSync(join(idxFolder, 'metadata', 'metadata_3.parquet'), 'utf8'), 'partition 3');

  const s = await runCli(RUN, ['score', '--index-folder', idxFolder, '--embeddings-folder', emb, '--queries', '300', '--nb_cores', '2']);
  assert.equal(s.code, 0, s.stderr);
  const score = JSON.parse(readFileSync(join(idxFolder, 'score.json'), 'utf8')) as { image: Record<string, number> };
  assert.ok(score.image['recall@10']! >= 0.9, `recall@10 ${score.image['recall@10']}`);
  assert.ok(score.image['recall@1']! >= 0.9, `recall@1 ${score.image['recall@1']}`);
  assert.ok(score.image['recall@100']! > 0.5);
  assert.ok(score.image.p50_search_speed_ms! > 0 && score.image.p99_search_speed_ms! >= score.image.p50_search_speed_ms!);

  const plain = await readIndex(join(idxFolder, 'image.index'));
  const mapped = await readIndex(join(idxFolder, 'image.index'), { mmap: true });
  const q = x.subarray(0, 50 * D);
  const a = await plain.search(q, 50, 10);
  const b = await mapped.search(q, 50, 10);
  assert.deepEqual(Array.from(b.labels), Array.from(a.labels));
  plain.dispose();
  mapped.dispose();
});

test('Python faiss reads image.index and finds the same neighbours (interop)', { skip, timeout: 60_000 }, async (t) => {
  const py = [join(REPO_ROOT, '.bench/venv/bin/python'), '/usr/bin/python3'].find((p) => existsSync(p) && spawnSync(p, ['-c', 'import faiss, numpy'], { stdio: 'ignore' }).status === 0);
  if (!py) {
    t.skip('no Python with faiss + numpy (apt-get install python3-faiss, or python3 -m venv .bench/venv && .bench/venv/bin/pip install faiss-cpu numpy)');
    return;
  }
  const path = join(idxFolder, 'image.index');
  if (!existsSync(path)) {
    t.skip('the build test did not produce image.index');
    return;
  }
  const queries = x.subarray(0, 20 * D);
  const ours = await readIndex(path);
  const want = await ours.search(queries, 20, 5);
  ours.dispose();
  const qfile = join(dir, 'q.f32');
  await writeFile(qfile, Buffer.from(queries.buffer, queries.byteOffset, queries.byteLength));
  const script = `import faiss, numpy as np, sys, json
idx = faiss.read_index(sys.argv[1])
q = np.fromfile(sys.argv[2], dtype=np.float32).reshape(-1, ${D})
D, I = idx.search(q, 5)
print(json.dumps(I.tolist()))`;
  const r = spawnSync(py, ['-c', script, path, qfile], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
  assert.equal(r.status, 0, r.stderr);
  const theirs = (JSON.parse(r.stdout) as number[][]).flat();
  assert.deepEqual(theirs, Array.from(want.labels));
});

test('--add-new-partitions appends without retraining: same ntotal and neighbours as a full build', { skip, timeout: 180_000 }, async () => {
  const n = 20_000;
  const d = 32;
  const y = clusteredVectors(n, d, { clusters: 100, seed: 5 });
  const grow = join(dir, 'grow');
  const full = join(dir, 'full');
  await makeEmbeddings(full, y, d, 4);
  // the growing dataset: the first 3 partitions now, the 4th later
  await makeEmbeddings(grow, y.subarray(0, 15_000 * d), d, 3);
  const common = ['--index-key', 'IVF128,Flat', '--index-param', 'nprobe=128', '--nb-cores', '2', '--tuning-queries', '200'];
  const incOut = join(dir, 'idx-inc');
  const fullOut = join(dir, 'idx-full');
  let r = await runCli(RUN, ['index', '--embeddings-folder', grow, '--index-folder', incOut, ...common]);
  assert.equal(r.code, 0, r.stderr);
  await writeNpy(join(grow, 'img_emb', 'img_emb_3.npy'), 'float16', d, y.subarray(15_000 * d));
  r = await runCli(RUN, ['index', '--embeddings-folder', grow, '--index-folder', incOut, '--add-new-partitions', ...common]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /adding 1 new partitions \(5000 vectors\)/);
  assert.doesNotMatch(r.stderr, /training/);
  r = await runCli(RUN, ['index', '--embeddings-folder', grow, '--index-folder', incOut, '--add-new-partitions', ...common]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /no new partitions/);
  r = await runCli(RUN, ['index', '--embeddings-folder', full, '--index-folder', fullOut, ...common]);
  assert.equal(r.code, 0, r.stderr);
  const inc = await readIndex(join(incOut, 'image.index'));
  const whole = await readIndex(join(fullOut, 'image.index'));
  assert.equal(inc.ntotal, n);
  assert.equal(whole.ntotal, n);
  assert.equal(JSON.parse(readFileSync(join(incOut, 'image.json'), 'utf8'))['nb vectors'], n);
  // nprobe = nlist: both are exact, so the neighbours must agree (ids included: same id order)
  const q = y.subarray(14_950 * d, 15_050 * d); // queries straddling the old and new partitions
  const a = await inc.search(q, 100, 10);
  const b = await whole.search(q, 100, 10);
  let same = 0;
  for (let i = 0; i < a.labels.length; i++) if (a.labels[i] === b.labels[i]) same++;
  assert.ok(same / a.labels.length > 0.99, `${same}/${a.labels.length} identical`);
  for (let i = 0; i < 100; i++) assert.equal(a.labels[i * 10], 14_950 + i, 'each query finds itself, new rows included');
  inc.dispose();
  whole.dispose();
});

test('bad arguments exit 2 before any work; a budget too small names the smallest that works', { skip, timeout: 60_000 }, async () => {
  let r = await runCli(RUN, ['index', '--embeddings-folder', emb]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /index-folder/);
  r = await runCli(RUN, ['index', '--embeddings-folder', emb, '--index-folder', join(dir, 'x'), '--max-index-memory-usage', 'lots']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /"lots" is not a memory size/);
  r = await runCli(RUN, ['index', '--embeddings-folder', emb, '--index-folder', join(dir, 'tiny'), '--max-index-memory-usage', '100K']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /the smallest that works is 810K/);
  assert.equal(existsSync(join(dir, 'tiny', 'image.index')), false);
});
