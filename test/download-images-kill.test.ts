// Crash safety of download_images through the real CLI: SIGKILL the coordinator at random moments,
// rerun the same command, and the result must match an uninterrupted run sample for sample; a worker
// process killed mid-shard must get its shard redone within the same run.
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startCrawlHost, type CrawlHost, type RouteHandler } from '../demo/crawl-host.ts';
import { faultsRoute } from '../demo/faults.ts';
import { imagesRoute } from '../demo/images.ts';
import { Rng } from '../lib/random.ts';
import { openDb, sqlString, type Db } from '../lib/parquet.ts';
import { readTarSamples } from '../lib/webdataset/tar-reader.ts';
import { REPO_ROOT, startCli, type CliRun } from './helpers/cli-process.ts';

const RUN = join(REPO_ROOT, 'download_images', 'run.ts');
const SHARDS = 8;
const PER_SHARD = 15;
const ROWS = SHARDS * PER_SHARD;

let host: CrawlHost;
let dir: string;
let db: Db;
let input: string;
/** The uninterrupted run everything else is compared with. */
let clean: OutputContent;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Every image answer waits a little, so shards take long enough to be killed in the middle. */
function slowed(inner: RouteHandler, delayMs: (url: URL) => number): RouteHandler {
  return async (req, res, url) => {
    await sleep(delayMs(url));
    if (!res.destroyed) await inner(req, res, url);
  };
}

before(async () => {
  host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
  const images = imagesRoute({ seed: 11, cacheSize: ROWS });
  host.addRoute('/images/', slowed(images, (url) => 40 + (Number(/\d+/.exec(url.pathname)?.[0] ?? 0) * 37) % 120));
  host.addRoute('/faults/', faultsRoute());
  dir = await mkdtemp(join(tmpdir(), 'dl-kill-'));
  db = await openDb({ threads: 1 });
  // Mostly images, some 404s so the failure rows have to survive the kills as well.
  const rows: string[] = [];
  for (let i = 0; i < ROWS; i++) {
    const url = i % 9 === 4 ? `${host.origin}/faults/404/${i}` : `${host.origin}/images/${i}.jpg`;
    rows.push(`${url},"caption ${i}"`);
  }
  input = join(dir, 'input.csv');
  await writeFile(input, 'URL,TEXT\n' + rows.join('\n') + '\n');
});

after(async () => {
  killLeftovers();
  db.close();
  await host.close();
  await rm(dir, { recursive: true, force: true });
});

const args = (out: string): string[] => [
  '--url_list', input, '--input_format', 'csv', '--url_col', 'URL', '--caption_col', 'TEXT',
  '--output_format', 'webdataset', '--output_folder', out, '--processes_count', '2', '--thread_count', '4',
  '--image_size', '48', '--number_sample_per_shard', String(PER_SHARD), '--timeout', '5',
  '--allow_private_addresses', 'True',
];

/** Worker pid -> its start time: killed at the end should any have outlived its run. */
const seenWorkers = new Map<number, string>();

/** Field 22 of /proc/<pid>/stat, so a pid reused by another process is never mistaken for ours. */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function killLeftovers(): void {
  for (const [pid, started] of seenWorkers) {
    if (startTime(pid) !== started) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

/**
 * Resolves with the run, or rejects after `ms`; then the run and every worker seen are SIGKILLed
 * and the pipes dropped, so a leftover worker holding them cannot hang this file.
 */
async function within(run: { child: ChildProcess; done: Promise<CliRun> }, ms: number, what: string): Promise<CliRun> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      run.child.kill('SIGKILL');
      killLeftovers();
      run.child.stdout?.destroy();
      run.child.stderr?.destroy();
      reject(new Error(`${what} did not end within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([run.done, limit]);
  } finally {
    clearTimeout(timer);
  }
}

function childPids(pid: number): number[] {
  let pids: number[];
  try {
    pids = execFileSync('ps', ['--ppid', String(pid), '-o', 'pid='], { encoding: 'utf8' })
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there is none
  }
  for (const p of pids) {
    const t = startTime(p);
    if (t !== null) seenWorkers.set(p, t);
  }
  return pids;
}

/** Running, not gone nor a zombie waiting for init to reap it. */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Still alive `graceMs` after its output pipes closed. An exiting process closes its files before
 * the kernel marks it a zombie, so a look right after the pipes close can catch it mid-exit (this
 * failed once in a CI run on an idle machine); one that outlives its coordinator is still there later.
 */
async function outlives(pid: number, graceMs = 2000): Promise<boolean> {
  const until = Date.now() + graceMs;
  while (await alive(pid)) {
    if (Date.now() > until) return true;
    await sleep(20);
  }
  return false;
}

/**
 * Waits until this run is writing at least `n` shards: temporary tars exist that were not there
 * before (`stale`, the leftovers of a killed run, which the new run removes first).
 */
async function untilWriting(out: string, run: { child: ChildProcess }, stale: Set<string>, ms: number, n = 1): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    assert.equal(run.child.exitCode, null, 'the run ended before writing');
    const names = await readdir(out).catch(() => [] as string[]);
    if (names.filter((x) => x.startsWith('.tmp-') && x.endsWith('.tar') && !stale.has(x)).length >= n) return;
    assert.ok(Date.now() < deadline, `no shard being written after ${ms} ms`);
    await sleep(20);
  }
}

interface ShardContent {
  /** key -> suffix -> bytes, for every sample in the tar. */
  samples: Map<string, Map<string, Buffer>>;
  /** `key status error url sha256`, one per parquet row, sorted. */
  rows: string[];
}

interface OutputContent {
  names: string[];
  shards: Map<string, ShardContent>;
}

/**
 * Reads everything under final names. Every tar must read back to its end and every parquet must
 * open, finished shard or not; a shard with a stats file must be whole and agree with itself.
 */
async function readOutput(out: string): Promise<OutputContent> {
  const names = (await readdir(out).catch(() => [] as string[])).sort();
  const shards = new Map<string, ShardContent>();
  for (const name of names) {
    const m = /^(\d{5})\.tar$/.exec(name);
    if (!m) continue;
    const samples = new Map<string, Map<string, Buffer>>();
    for await (const s of readTarSamples(join(out, name))) {
      assert.ok(!samples.has(s.key), `${name}: key ${s.key} twice`);
      assert.deepEqual([...s.members.keys()], ['jpg', 'json', 'txt'], `${name}: ${s.key}`);
      samples.set(s.key, s.members);
    }
    shards.set(m[1]!, { samples, rows: [] });
  }
  for (const name of names) {
    const m = /^(\d{5})\.parquet$/.exec(name);
    if (!m) continue;
    const rows = await db.all<Record<string, unknown>>(`SELECT key, status, error_message, url, sha256 FROM ${sqlString(join(out, name))}`);
    const shard = shards.get(m[1]!) ?? { samples: new Map(), rows: [] };
    shard.rows = rows.map((r) => `${r.key} ${r.status} ${r.error_message} ${r.url} ${r.sha256}`).sort();
    shards.set(m[1]!, shard);
  }
  for (const name of names) {
    const m = /^(\d{5})_stats\.json$/.exec(name);
    if (!m) continue;
    const stats = JSON.parse(await readFile(join(out, name), 'utf8')) as { count: number; successes: number };
    assert.ok(names.includes(`${m[1]}.tar`) && names.includes(`${m[1]}.parquet`), `${name} without its tar and parquet`);
    const shard = shards.get(m[1]!)!;
    assert.equal(stats.count, PER_SHARD, name);
    assert.equal(shard.rows.length, PER_SHARD, `${m[1]}.parquet rows`);
    assert.equal(new Set(shard.rows.map((r) => r.split(' ')[0])).size, PER_SHARD, `${m[1]}.parquet: duplicate keys`);
    const successKeys = shard.rows.filter((r) => r.split(' ')[1] === 'success').map((r) => r.split(' ')[0]!);
    assert.equal(stats.successes, successKeys.length, name);
    assert.deepEqual([...shard.samples.keys()].sort(), successKeys.sort(), `${m[1]}.tar keys vs parquet successes`);
  }
  return { names, shards };
}

function assertSameAsClean(got: OutputContent): void {
  assert.deepEqual(got.names, clean.names);
  for (const [id, want] of clean.shards) {
    const shard = got.shards.get(id)!;
    assert.deepEqual(shard.rows, want.rows, `shard ${id} parquet rows`);
    assert.deepEqual([...shard.samples.keys()].sort(), [...want.samples.keys()].sort(), `shard ${id} keys`);
    for (const [key, members] of want.samples) {
      const other = shard.samples.get(key)!;
      for (const [suffix, bytes] of members) assert.ok(bytes.equals(other.get(suffix)!), `${key}.${suffix} differs from the clean run`);
    }
  }
}

test('clean run: the reference output', async () => {
  const out = join(dir, 'clean');
  const started = Date.now();
  const r = await within(startCli(RUN, args(out)), 80_000, 'clean run');
  assert.equal(r.code, 0, r.stderr);
  clean = await readOutput(out);
  const expected = Array.from({ length: SHARDS }, (_, s) => String(s).padStart(5, '0')).flatMap((n) => [`${n}.parquet`, `${n}.tar`, `${n}_stats.json`]);
  assert.deepEqual(clean.names, expected.sort());
  let successes = 0;
  for (const s of clean.shards.values()) successes += s.samples.size;
  assert.equal(successes, ROWS - Math.ceil((ROWS - 4) / 9));
  console.log(`clean run: ${Date.now() - started} ms`);
});

test('SIGKILL of the coordinator three times at random moments, then a rerun: same samples as the clean run', async () => {
  assert.ok(clean, 'needs the clean run');
  const out = join(dir, 'killed');
  const rng = new Rng(20240605);
  for (let k = 0; k < 3; k++) {
    // The first kill falls anywhere from start-up on; the others once shards are being written, so
    // downloads, tar writes and commits get hit rather than only the start-up.
    const delay = rng.int(k === 0 ? 300 : 0, 2500);
    const stale = new Set(await readdir(out).catch(() => [] as string[]));
    const run = startCli(RUN, args(out));
    const started = Date.now();
    if (k > 0) await untilWriting(out, run, stale, 30_000);
    const writingAfter = Date.now() - started;
    await sleep(delay);
    const workers = childPids(run.child.pid!);
    run.child.kill('SIGKILL');
    const killedAt = Date.now();
    // The run's stdout/stderr pipes are shared with its workers, so this waits for them too.
    const r = await within(run, 10_000, `killed run ${k} and its workers`);
    const workersGoneMs = Date.now() - killedAt;
    assert.equal(r.signal, 'SIGKILL');
    for (const pid of workers) assert.ok(!(await outlives(pid)), `worker ${pid} outlived its coordinator`);
    assert.ok(workersGoneMs < 5_000, `workers took ${workersGoneMs} ms to go`);
    // Whatever is under a final name is whole (readOutput reads every tar and parquet through).
    const partial = await readOutput(out).catch((err: unknown) => {
      throw new Error(`after kill ${k} at ${delay} ms: ${String(err)}`);
    });
    for (const [id, shard] of partial.shards) {
      if (!partial.names.includes(`${id}_stats.json`)) continue;
      // A finished shard already holds exactly the clean run's samples.
      assert.deepEqual([...shard.samples.keys()].sort(), [...clean.shards.get(id)!.samples.keys()].sort());
    }
    const done = partial.names.filter((n) => n.endsWith('_stats.json')).length;
    console.log(`kill ${k}: ${Date.now() - started - workersGoneMs} ms after start (writing after ${k > 0 ? writingAfter : '-'} ms), ${workers.length} workers, gone ${workersGoneMs} ms later, ${done} shards done`);
  }
  const r = await within(startCli(RUN, args(out)), 80_000, 'rerun');
  assert.equal(r.code, 0, r.stderr);
  const final = await readOutput(out);
  assertSameAsClean(final);
  assert.ok(!final.names.some((n) => n.startsWith('.tmp-') || n === '_tmp'), final.names.join(' '));
});

test('SIGKILL of the coordinator while its workers start up: they exit instead of idling forever', async () => {
  const out = join(dir, 'startup-killed');
  const run = startCli(RUN, args(out));
  const deadline = Date.now() + 30_000;
  let workers: number[] = [];
  while (workers.length === 0) {
    assert.ok(Date.now() < deadline && run.child.exitCode === null, 'no worker process appeared');
    await sleep(10);
    workers = childPids(run.child.pid!);
  }
  // Still loading their modules: the IPC channel closes before they listen to it.
  run.child.kill('SIGKILL');
  const r = await within(run, 15_000, 'workers orphaned during start-up');
  assert.equal(r.signal, 'SIGKILL');
  for (const pid of workers) assert.ok(!(await outlives(pid)), `worker ${pid} outlived its coordinator`);
});

test('a worker process SIGKILLed mid-shard: its shard is redone and the run still succeeds', async () => {
  assert.ok(clean, 'needs the clean run');
  const out = join(dir, 'worker-killed');
  const run = startCli(RUN, args(out));
  // Both workers are inside a shard once two temporary tars exist: kill one of them.
  await untilWriting(out, run, new Set(), 30_000, 2);
  const victim = childPids(run.child.pid!)[0];
  assert.ok(victim, 'no worker process');
  process.kill(victim, 'SIGKILL');
  const r = await within(run, 80_000, 'run with a killed worker');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /shard \d+ failed with error worker process exited \(SIGKILL\)/);
  assert.match(r.stderr, /Retrying the 1 failed shards/);
  const final = await readOutput(out);
  assertSameAsClean(final);
  // The dead worker's temporary files are gone too.
  assert.ok(!final.names.some((n) => n.startsWith('.tmp-') || n === '_tmp'), final.names.join(' '));
});
