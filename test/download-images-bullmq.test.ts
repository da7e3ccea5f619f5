// --distributor bullmq end to end: a local redis-server, the coordinator (run.ts) and two worker
// processes (worker.ts) against the demo crawl host with slow images; one worker is SIGKILLed in
// the middle of a shard and the other must take it over, every shard committed exactly once.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { imagesRoute } from '../demo/images.ts';
import { openDb, sqlString, type Db } from '../lib/parquet.ts';
import { readTarSamples } from '../lib/webdataset/tar-reader.ts';
import { startCli, waitFor, type LiveCli } from './helpers/cli-process.ts';
import { freePort, redisSkip as skip, startTestRedis, type TestRedis } from './helpers/redis-server.ts';

const RUN = 'download_images/run.ts';
const WORKER = 'download_images/worker.ts';
const SHARDS = 6;
const PER_SHARD = 20;
const DELAY_MS = 250;

let dir: string;
let host: CrawlHost;
let db: Db;
let redis: TestRedis;
let redisUrl = '';
const children = new Set<ChildProcess>();

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

before(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), 'dl-bullmq-'));
  redis = await startTestRedis(dir);
  redisUrl = redis.url;
  host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
  const images = imagesRoute({ seed: 5 });
  // Slow images, so a shard lasts a few seconds and a worker can be killed in the middle of one.
  host.addRoute('/slow/', async (req, res, url) => {
    await sleep(DELAY_MS);
    await images(req, res, new URL(url.pathname.replace(/^\/slow\//, '/images/'), url));
  });
  db = await openDb({ threads: 1 });
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (skip) return;
  db?.close();
  await host?.close();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

function start(script: string, args: string[]): LiveCli {
  const r = startCli(script, args);
  children.add(r.child);
  return r;
}

interface Row {
  url: string;
  caption: string;
  ok: boolean;
}

async function writeInput(path: string): Promise<Row[]> {
  const rows: Row[] = [];
  for (let i = 0; i < SHARDS * PER_SHARD; i++) {
    // Every ninth row fails (404), so the parquets hold failures the tars must not.
    const ok = i % 9 !== 4;
    rows.push({ url: ok ? `${host.origin}/slow/${i}.jpg` : `${host.origin}/slow/missing-${i}.jpg`, caption: `row ${i}`, ok });
  }
  await writeFile(path, 'url,caption\n' + rows.map((r) => `${r.url},${r.caption}`).join('\n') + '\n');
  return rows;
}

const coordinatorArgs = (input: string, out: string, queue: string): string[] => [
  '--url_list', input, '--input_format', 'csv', '--caption_col', 'caption', '--output_format', 'webdataset',
  '--output_folder', out, '--number_sample_per_shard', String(PER_SHARD), '--thread_count', '2', '--image_size', '32',
  '--timeout', '10', '--allow-private-addresses', 'True', '--distributor', 'bullmq', '--redis-url', redisUrl, '--queue-name', queue,
];

const workerArgs = (out: string, queue: string): string[] => [
  '--redis-url', redisUrl, '--output-folder', out, '--queue-name', queue, '--lock-duration', '2', '--stalled-interval', '1',
];

test('two BullMQ workers, one SIGKILLed mid-shard: every shard completes once', { skip, timeout: 120_000 }, async (t) => {
  const input = join(dir, 'in.csv');
  const out = join(dir, 'out');
  const queue = redis.queueName('dl-test');
  const rows = await writeInput(input);

  const a = start(WORKER, workerArgs(out, queue));
  const b = start(WORKER, workerArgs(out, queue));
  const coord = start(RUN, coordinatorArgs(input, out, queue));

  // Kill whichever worker starts a shard first, once it is well into it.
  const startedRe = /shard (\d+): started/;
  await waitFor('a worker to start a shard', () => startedRe.test(a.stderr()) || startedRe.test(b.stderr()), 60_000);
  const [victim, survivor] = startedRe.test(a.stderr()) ? [a, b] : [b, a];
  const killedShard = startedRe.exec(victim.stderr())![1]!;
  await sleep(800);
  const doneBeforeKill = (await readdir(out)).includes(`${killedShard}_stats.json`);
  victim.child.kill('SIGKILL');
  assert.equal(doneBeforeKill, false, 'the shard finished before the kill; the test proves nothing');
  const killedAt = Date.now();
  const killed = await victim.done;
  assert.equal(killed.signal, 'SIGKILL');
  // Taken over after about lock duration (2 s) + stalled interval (1 s), not the 30 s defaults.
  const takenOver = new RegExp(`shard ${killedShard}: started`);
  await waitFor('the killed shard to be taken over', () => takenOver.test(survivor.stderr()), 30_000);
  t.diagnostic(`shard ${killedShard} taken over ${Date.now() - killedAt} ms after the kill`);

  const c = await coord.done;
  assert.equal(c.code, 0, c.stderr);
  if (process.env.SHOW_LOGS) t.diagnostic(`coordinator:\n${c.stderr}\nvictim:\n${killed.stderr}`);
  survivor.child.kill('SIGTERM');
  const s = await survivor.done;
  assert.equal(s.code, 0, s.stderr);
  if (process.env.SHOW_LOGS) t.diagnostic(`survivor:\n${s.stderr}`);
  assert.match(c.stderr, new RegExp(`total {3}- success: [\\d.]+ - .* - count: ${rows.length}\\b`));
  assert.match(c.stderr, new RegExp(`shards finished in this run: ${SHARDS}\\b`));

  // Exactly one tar + parquet + stats per shard, no temporary leftovers, no _tmp.
  const names = (await readdir(out)).sort();
  const want: string[] = [];
  for (let i = 0; i < SHARDS; i++) {
    const n = String(i).padStart(5, '0');
    want.push(`${n}.parquet`, `${n}.tar`, `${n}_stats.json`);
  }
  assert.deepEqual(names, want.sort());

  // Every input row once across the parquets, with the right status.
  const got = await db.all<{ key: string; url: string; caption: string; status: string; error_message: string | null; filename: string }>(
    `SELECT key, url, caption, status, error_message, filename FROM read_parquet(${sqlString(join(out, '*.parquet'))}, filename=true) ORDER BY key`,
  );
  assert.equal(got.length, rows.length);
  assert.equal(new Set(got.map((g) => g.key)).size, rows.length);
  const byUrl = new Map(got.map((g) => [g.url, g]));
  assert.equal(byUrl.size, rows.length);
  for (const r of rows) {
    const g = byUrl.get(r.url);
    assert.ok(g, `row ${r.caption} missing`);
    assert.equal(g.caption, r.caption);
    assert.equal(g.status, r.ok ? 'success' : 'failed_to_download', `${r.url}: ${g.error_message}`);
  }

  // Tar keys are exactly the parquet's successes, shard by shard; stats agree.
  let successes = 0;
  for (let i = 0; i < SHARDS; i++) {
    const n = String(i).padStart(5, '0');
    const okKeys = got.filter((g) => g.filename.endsWith(`${n}.parquet`) && g.status === 'success').map((g) => g.key);
    const tarKeys: string[] = [];
    for await (const sample of readTarSamples(join(out, `${n}.tar`))) {
      assert.ok(sample.members.has('jpg'), `${sample.key} has no jpg`);
      tarKeys.push(sample.key);
    }
    assert.deepEqual(tarKeys.sort(), okKeys.sort(), `shard ${n}`);
    const stats = JSON.parse(await readFile(join(out, `${n}_stats.json`), 'utf8')) as { count: number; successes: number };
    assert.equal(stats.count, PER_SHARD);
    assert.equal(stats.successes, okKeys.length);
    successes += okKeys.length;
  }
  assert.equal(successes, rows.filter((r) => r.ok).length);

  // A rerun (incremental) finds every shard done and needs no worker.
  const again = await start(RUN, coordinatorArgs(input, out, queue)).done;
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, new RegExp(`shards already finished and skipped: ${SHARDS}`));
  assert.deepEqual((await readdir(out)).sort(), want.sort());
});

test('bullmq flags are checked before any work', { skip, timeout: 60_000 }, async () => {
  const noUrl = await start(RUN, ['--url_list', join(dir, 'none.csv'), '--output_folder', join(dir, 'x'), '--distributor', 'bullmq']).done;
  assert.equal(noUrl.code, 2);
  assert.match(noUrl.stderr, /--distributor bullmq needs --redis-url/);
  const badUrl = await start(RUN, ['--url_list', 'x', '--distributor', 'bullmq', '--redis-url', 'http://127.0.0.1:1']).done;
  assert.equal(badUrl.code, 2);
  assert.match(badUrl.stderr, /expected redis:\/\/ or rediss:\/\//);
  const help = await start(WORKER, ['--help']).done;
  assert.equal(help.code, 0);
  for (const flag of ['--redis-url', '--output-folder', '--queue-name', '--concurrency', '--lock-duration', '--stalled-interval']) assert.ok(help.stdout.includes(flag), flag);
  // Nothing listening: the worker says so and exits instead of retrying forever.
  const port = await freePort();
  const down = await start(WORKER, ['--redis-url', `redis://127.0.0.1:${port}`, '--output-folder', join(dir, 'x')]).done;
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach Redis/);
});

test('SIGTERM lets a worker finish its shard; a second one puts the shard back on the queue', { skip, timeout: 120_000 }, async () => {
  const input = join(dir, 'in2.csv');
  const out = join(dir, 'out2');
  const queue = redis.queueName('dl-test-term');
  const rows = (await writeInput(input)).slice(0, 4 * PER_SHARD);
  await writeFile(input, 'url,caption\n' + rows.map((r) => `${r.url},${r.caption}`).join('\n') + '\n');
  const startedRe = /shard (\d+): started/;

  const w1 = start(WORKER, workerArgs(out, queue));
  const coord = start(RUN, coordinatorArgs(input, out, queue));
  await waitFor('worker 1 to start a shard', () => startedRe.test(w1.stderr()), 60_000);
  const first = startedRe.exec(w1.stderr())![1]!;
  w1.child.kill('SIGTERM');
  const r1 = await w1.done;
  assert.equal(r1.code, 0, r1.stderr);
  assert.match(r1.stderr, new RegExp(`count: ${PER_SHARD} \\(shard ${first}\\)`));
  assert.ok((await readdir(out)).includes(`${first}_stats.json`), 'the shard in progress was finished');
  // It took no further shard after the signal.
  assert.equal(r1.stderr.match(/: started/g)?.length, 1);

  const w2 = start(WORKER, workerArgs(out, queue));
  await waitFor('worker 2 to start a shard', () => startedRe.test(w2.stderr()), 60_000);
  const second = startedRe.exec(w2.stderr())![1]!;
  w2.child.kill('SIGTERM');
  await sleep(200);
  w2.child.kill('SIGTERM');
  const r2 = await w2.done;
  assert.equal(r2.code, 130, r2.stderr);
  assert.match(r2.stderr, new RegExp(`shard ${second}: released to the queue`));
  const after2 = await readdir(out);
  assert.ok(!after2.includes(`${second}_stats.json`), 'a released shard is not committed');
  assert.deepEqual(after2.filter((n) => n.startsWith('.tmp-')), []);

  const w3 = start(WORKER, [...workerArgs(out, queue), '--concurrency', '3']);
  const c = await coord.done;
  assert.equal(c.code, 0, c.stderr);
  w3.child.kill('SIGTERM');
  const r3 = await w3.done;
  assert.equal(r3.code, 0, r3.stderr);
  // The released shard was picked up again at once (no stall), by worker 3.
  assert.match(r3.stderr, new RegExp(`shard ${second}: started`));
  assert.match(c.stderr, new RegExp(`shards finished in this run: 4\\b`));
  const got = await db.all<{ n: bigint; urls: bigint }>(`SELECT count(*) n, count(DISTINCT url) urls FROM read_parquet(${sqlString(join(out, '*.parquet'))})`);
  assert.equal(Number(got[0]!.n), rows.length);
  assert.equal(Number(got[0]!.urls), rows.length);
  assert.deepEqual((await readdir(out)).filter((n) => !/^\d{5}(\.tar|\.parquet|_stats\.json)$/.test(n)), []);
});
