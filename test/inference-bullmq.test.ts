// `run.ts inference --distributor bullmq` end to end with the tiny generated CLIP model: a Redis
// (helpers/redis-server.ts), the coordinator, and `run.ts inference --worker` processes. The
// outputs must be byte-identical to a sequential run on the same input; a worker SIGKILLed in the
// middle of a partition must have its job taken over; a rerun must skip finished partitions.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { writeTinyClip } from '../demo/tiny-clip.ts';
import { runCli, startCli, waitFor, type LiveCli } from './helpers/cli-process.ts';
import { filesBelow } from './helpers/file-tree.ts';
import { redisSkip as skip, startTestRedis, type TestRedis } from './helpers/redis-server.ts';
import { shapeItems, wdsMembers, writeTar } from './helpers/shape-samples.ts';

const SCRIPT = 'embeddings-indices-hosting/run.ts';
const TARS = 8;
/** 8 tars of 12 samples, 24 per partition: 4 partitions of 2 tars (tar i in partition i % 4). */
const PARTITIONS = 4;

let dir: string;
let model: string;
let redis: TestRedis;
const children = new Set<ChildProcess>();

before(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), 'inference-bullmq-'));
  redis = await startTestRedis(dir);
  model = writeTinyClip(join(dir, 'model'));
  const items = await shapeItems();
  const wds = join(dir, 'wds');
  await mkdir(wds);
  for (let t = 0; t < TARS; t++) {
    const samples = items.map((it) => ({ key: `${t}${it.key.slice(1)}`, members: wdsMembers(it) }));
    // A picture that does not decode, in partition 1: reported by the coordinator, left out.
    if (t === 5) samples[3] = { key: `${t}00000099`, members: { jpg: Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]), txt: 'a broken picture', json: '{"key": "broken"}' } };
    await writeTar(join(wds, `${String(t).padStart(5, '0')}.tar`), samples);
  }
  // files layout, for the relative-path test.
  for (const [i, it] of items.entries()) {
    const shard = join(dir, 'files', String(i % 3).padStart(5, '0'));
    await mkdir(shard, { recursive: true });
    await writeFile(join(shard, `${it.key}.jpg`), it.jpg);
    await writeFile(join(shard, `${it.key}.txt`), it.caption);
    await writeFile(join(shard, `${it.key}.json`), JSON.stringify(it.json));
  }
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (skip) return;
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

function start(args: string[], cwd?: string): LiveCli {
  const r = startCli(SCRIPT, args, {}, cwd);
  children.add(r.child);
  return r;
}

const inferenceArgs = (out: string): string[] => [
  'inference', '--input_dataset', join(dir, 'wds'), '--input_format', 'webdataset', '--output_folder', out, '--clip_model', model,
  '--enable_metadata', 'True', '--wds_number_file_per_input_file', '12', '--write_batch_size', '24', '--batch_size', '5',
  '--intra_op_threads', '1', '--num_prepro_workers', '2',
];
// snake_case, as clip-retrieval users write flags.
const coordinatorArgs = (out: string, queue: string): string[] => [...inferenceArgs(out), '--distributor', 'bullmq', '--redis_url', redis.url, '--queue_name', queue];
const workerArgs = (out: string, queue: string): string[] => [
  'inference', '--worker', '--redis-url', redis.url, '--output-folder', out, '--queue-name', queue, '--lock-duration', '2', '--stalled-interval', '1',
];

/** Relative path -> bytes of every file below `root`. */
async function readTree(root: string): Promise<Map<string, Buffer>> {
  const t = new Map<string, Buffer>();
  for (const f of await filesBelow(root)) t.set(relative(root, f), readFileSync(f));
  return t;
}

async function assertSameTree(got: string, want: string): Promise<void> {
  const [g, w] = [await readTree(got), await readTree(want)];
  assert.deepEqual([...g.keys()].sort(), [...w.keys()].sort(), 'the same files, no leftovers (staging folders, run markers)');
  for (const [name, bytes] of w) assert.ok(g.get(name)!.equals(bytes), `${name} differs from the sequential run's`);
}

let sequential = '';
let distributed = '';

test('bullmq with a worker SIGKILLed mid-partition: the job is taken over, outputs byte-identical to the sequential run', { skip, timeout: 180_000 }, async (t) => {
  sequential = join(dir, 'sequential');
  const seq = await runCli(SCRIPT, inferenceArgs(sequential));
  assert.equal(seq.code, 0, seq.stderr);
  assert.match(seq.stderr, new RegExp(`done: 95 samples embedded in ${PARTITIONS} partition\\(s\\) \\(0 already finished\\), 1 skipped`));

  distributed = join(dir, 'bullmq');
  const queue = redis.queueName('inference-test');
  // The victim alone first, so it takes a partition; killed as soon as it starts (its model loads then).
  const victim = start(workerArgs(distributed, queue));
  const coord = start(coordinatorArgs(distributed, queue));
  const startedRe = /partition (\d+): started/;
  await waitFor('the first worker to start a partition', () => startedRe.test(victim.stderr()), 60_000);
  const killedPartition = startedRe.exec(victim.stderr())![1]!;
  victim.child.kill('SIGKILL');
  const killed = await victim.done;
  assert.equal(killed.signal, 'SIGKILL');
  assert.ok(!existsSync(join(distributed, 'metadata', `metadata_${killedPartition}.parquet`)), 'the partition finished before the kill; the test proves nothing');
  const killedAt = Date.now();

  const survivor = start(workerArgs(distributed, queue));
  await waitFor('the killed partition to be taken over', () => new RegExp(`partition ${killedPartition}: started`).test(survivor.stderr()), 60_000);
  t.diagnostic(`partition ${killedPartition} taken over ${Date.now() - killedAt} ms after the kill (lock 2 s + stalled check 1 s)`);
  const c = await coord.done;
  assert.equal(c.code, 0, c.stderr);
  survivor.child.kill('SIGTERM');
  const s = await survivor.done;
  assert.equal(s.code, 0, s.stderr);
  if (process.env.SHOW_LOGS) t.diagnostic(`coordinator:\n${c.stderr}\nsurvivor:\n${s.stderr}`);

  assert.match(c.stderr, /start workers with\n {2}npx tsx embeddings-indices-hosting\/run\.ts inference --worker/);
  assert.match(c.stderr, new RegExp(`done: 95 samples embedded in ${PARTITIONS} partition\\(s\\) \\(0 already finished\\), 1 skipped`));
  // The worker's skip reason reaches the coordinator's log, as in a sequential run.
  assert.match(c.stderr, /skipped .*00005\.tar: 500000099: image does not decode/);
  assert.equal(s.stderr.match(/: started/g)?.length, PARTITIONS, 'the survivor did every partition, the killed one included');
  await assertSameTree(distributed, sequential);
});

test('a rerun skips finished partitions: only a removed one is queued and redone, to the same bytes', { skip, timeout: 120_000 }, async () => {
  assert.ok(distributed, 'needs the first test');
  for (const f of ['img_emb/img_emb_2.npy', 'text_emb/text_emb_2.npy', 'metadata/metadata_2.parquet']) await rm(join(distributed, f));
  const queue = redis.queueName('inference-rerun');
  const worker = start(workerArgs(distributed, queue));
  const again = await start(coordinatorArgs(distributed, queue)).done;
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, new RegExp(`${PARTITIONS - 1} partition\\(s\\) already finished, skipped`));
  assert.match(again.stderr, /done: 24 samples embedded in 1 partition\(s\) \(3 already finished\), 0 skipped/);
  worker.child.kill('SIGTERM');
  const w = await worker.done;
  assert.equal(w.code, 0, w.stderr);
  assert.deepEqual(w.stderr.match(/partition \d+: started/g), ['partition 2: started']);
  await assertSameTree(distributed, sequential);

  // Everything finished: nothing is queued, no worker is needed.
  const done = await start(coordinatorArgs(distributed, redis.queueName('inference-none'))).done;
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stderr, new RegExp(`done: 0 samples embedded in 0 partition\\(s\\) \\(${PARTITIONS} already finished\\)`));
});

test('files input by a relative path, the worker started elsewhere: image_path as in the sequential run', { skip, timeout: 120_000 }, async () => {
  const args = (out: string): string[] => [
    'inference', '--input-dataset', 'files', '--input-format', 'files', '--output-folder', out, '--clip-model', model, '--enable-metadata', 'True',
    '--write-batch-size', '5', '--batch-size', '4', '--intra-op-threads', '1',
  ];
  const seq = await runCli(SCRIPT, args('seq-files'), {}, dir);
  assert.equal(seq.code, 0, seq.stderr);
  const queue = redis.queueName('inference-files');
  // The worker runs from the repository root, where `files` does not exist.
  const worker = start(['inference', '--worker', '--redis-url', redis.url, '--output-folder', join(dir, 'bullmq-files'), '--queue-name', queue]);
  const coord = await start([...args('bullmq-files'), '--distributor', 'bullmq', '--redis-url', redis.url, '--queue-name', queue], dir).done;
  assert.equal(coord.code, 0, coord.stderr);
  worker.child.kill('SIGTERM');
  assert.equal((await worker.done).code, 0);
  await assertSameTree(join(dir, 'bullmq-files'), join(dir, 'seq-files'));
});

test('bullmq flags are checked before any work; the worker has its own --help', { skip, timeout: 60_000 }, async () => {
  const base = ['inference', '--input_dataset', join(dir, 'wds'), '--input_format', 'webdataset', '--output_folder', join(dir, 'x'), '--clip_model', model];
  const noUrl = await runCli(SCRIPT, [...base, '--distributor', 'bullmq']);
  assert.equal(noUrl.code, 2);
  assert.match(noUrl.stderr, /^error: --distributor bullmq needs --redis-url/m);
  const badUrl = await runCli(SCRIPT, [...base, '--distribution_strategy', 'bullmq', '--redis_url', 'http://127.0.0.1:1']);
  assert.equal(badUrl.code, 2);
  assert.match(badUrl.stderr, /expected redis:\/\/ or rediss:\/\//);
  const help = await runCli(SCRIPT, ['inference', '--worker', '--help']);
  assert.equal(help.code, 0);
  for (const flag of ['--redis-url', '--output-folder', '--queue-name', '--concurrency', '--lock-duration', '--clip-model', '--device']) assert.ok(help.stdout.includes(flag), flag);
  assert.ok(!existsSync(join(dir, 'x')));
});
