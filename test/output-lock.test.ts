// One run per output folder (issue 16, item 6): lib/output-lock.ts itself, then every stage CLI
// that writes an output folder refusing a second run with one line and exit 2.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { faultsRoute, faultUrl } from '../demo/faults.ts';
import { imagesRoute } from '../demo/images.ts';
import { CliError } from '../lib/cli.ts';
import { acquireOutputLock, LOCK_NAME } from '../lib/output-lock.ts';
import { startCli } from './helpers/cli-process.ts';
import { assertExit, assertOneErrorLine, assertUntouched, finishWithin, hashTree, runWithin } from './helpers/guarded-run.ts';

const DEADLINE_MS = 90_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A live process that is not us, to hold a lock. */
function sleeper(): ChildProcess {
  return spawn(process.execPath, ['-e', 'setTimeout(() => {}, 120000)'], { stdio: 'ignore' });
}

function procStart(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

async function writeLock(dir: string, info: Record<string, unknown>): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, LOCK_NAME), JSON.stringify({ host: hostname(), started: '2026-01-01T00:00:00.000Z', command: 'other run', ...info }));
}

const tempDir = (): Promise<string> => mkdtemp(join(tmpdir(), 'output-lock-'));

describe('lib/output-lock.ts', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  test('a live holder on this host is refused, named by pid, host and command', async () => {
    const dir = await tempDir();
    const holder = sleeper();
    children.push(holder);
    await waitFor(() => existsSync(`/proc/${holder.pid}/stat`), 5000, 'the holder');
    await writeLock(dir, { pid: holder.pid, procStart: procStart(holder.pid!) });
    await assert.rejects(acquireOutputLock(dir), (err: unknown) => {
      assert.ok(err instanceof CliError);
      assert.match(err.message, new RegExp(`in use by another run: pid ${holder.pid} on ${hostname()}.*other run`));
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
    // Its lock is left as it was.
    assert.equal(JSON.parse(await readFile(join(dir, LOCK_NAME), 'utf8')).pid, holder.pid);
  });

  test('a dead holder, or a pid now used by another process, is stale and taken over', async () => {
    for (const stale of ['dead', 'reused'] as const) {
      const dir = await tempDir();
      let pid: number;
      if (stale === 'dead') {
        const gone = sleeper();
        pid = gone.pid!;
        gone.kill('SIGKILL');
        await new Promise((r) => gone.once('exit', r));
        await writeLock(dir, { pid, procStart: null });
      } else {
        const live = sleeper();
        children.push(live);
        pid = live.pid!;
        await waitFor(() => existsSync(`/proc/${pid}/stat`), 5000, 'the process');
        await writeLock(dir, { pid, procStart: '1' }); // started at another time: not the holder
      }
      const lock = await acquireOutputLock(dir);
      const info = JSON.parse(await readFile(lock.path, 'utf8'));
      assert.equal(info.pid, process.pid, stale);
      lock.release();
      assert.equal(existsSync(lock.path), false);
    }
  });

  test('a holder on another host is never guessed stale; an unreadable lock is refused', async () => {
    const dir = await tempDir();
    await writeLock(dir, { pid: 999_999_999, host: 'elsewhere.example', procStart: null });
    await assert.rejects(acquireOutputLock(dir), /pid 999999999 on elsewhere\.example/);
    const dir2 = await tempDir();
    await writeFile(join(dir2, LOCK_NAME), 'garbage');
    await assert.rejects(acquireOutputLock(dir2), /exists but cannot be read.*delete .*_lock/);
  });

  test('an output folder that is a file, or lies under one, is one line naming the flag', async () => {
    const dir = await tempDir();
    const file = join(dir, 'a-file');
    await writeFile(file, 'not a folder');
    await assert.rejects(acquireOutputLock(file), (err: unknown) => err instanceof CliError && /^--output-folder .*a-file is a file, not a folder/.test(err.message));
    await assert.rejects(acquireOutputLock(join(file, 'sub')), (err: unknown) => err instanceof CliError && /^--output-folder .*sub cannot be used \(ENOTDIR/.test(err.message));
    assert.equal(await readFile(file, 'utf8'), 'not a folder');
  });

  test('release removes only our own lock', async () => {
    const dir = await tempDir();
    const lock = await acquireOutputLock(dir);
    await writeLock(dir, { pid: 1, procStart: null }); // someone replaced it by hand
    lock.release();
    assert.equal(existsSync(join(dir, LOCK_NAME)), true);
  });

  test('a process exit releases the lock; so does SIGINT', async () => {
    const dir = await tempDir();
    const code = `import { lockOutputOrExit } from './lib/output-lock.ts'; await lockOutputOrExit(${JSON.stringify(dir)}); console.log('locked'); setTimeout(() => {}, 60000);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('locked') && resolve()));
    assert.equal(JSON.parse(await readFile(join(dir, LOCK_NAME), 'utf8')).pid, child.pid);
    child.kill('SIGINT');
    const exit = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    assert.equal(exit, 130);
    assert.equal(existsSync(join(dir, LOCK_NAME)), false);
  });
});

describe('each stage refuses a second run on its output folder with exit 2', () => {
  let host: CrawlHost;
  const children: ChildProcess[] = [];
  before(async () => {
    host = await startCrawlHost({ seed: 3, files: 4, rowsPerFile: 400, throttleBytesPerSec: 40_000 });
    host.addRoute('/images/', imagesRoute({ seed: 2 }));
    host.addRoute('/faults/', faultsRoute({}));
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await host.close();
  });

  test('download_csv: the second run exits 2 naming the first; the first finishes every file', async () => {
    const out = await tempDir();
    await writeFile(join(out, 'notes.txt'), 'mine\n');
    const userFiles = await hashTree(out);
    const args = ['--url', host.crawlUrl, '--output-folder', out, '--allow-private-addresses', '--include', '*.csv,*.csv.gz'];
    const first = startCli('download_csv/run.ts', args);
    children.push(first.child);
    await waitFor(() => existsSync(join(out, LOCK_NAME)), 30_000, 'the first run to take the lock');
    const second = await runWithin('download_csv/run.ts', args, DEADLINE_MS);
    assertExit(second, 2);
    assertOneErrorLine(second.stderr, new RegExp(`in use by another run: pid ${first.child.pid} on `));
    const r = await finishWithin(first.child, first.done, DEADLINE_MS);
    assertExit(r, 0);
    const lines = (await readFile(join(out, '_manifest.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.length > 0 && lines.every((l) => l.status === 'downloaded'));
    assert.equal(existsSync(join(out, LOCK_NAME)), false, 'lock not released');
    await assertUntouched(out, userFiles);
  });

  test('download_images: the second run exits 2 and leaves the first one its temp shards', async () => {
    const dir = await tempDir();
    const out = join(dir, 'out');
    const list = join(dir, 'urls.txt');
    // A slow URL keeps the first run busy for a few seconds.
    await writeFile(list, [`${host.origin}/images/1.jpg`, faultUrl(host.origin, 'slow-headers', 0), `${host.origin}/images/2.jpg`].join('\n') + '\n');
    const args = ['--url_list', list, '--output_folder', out, '--allow-private-addresses', '--timeout', '4', '--thread_count', '4', '--output_format', 'files'];
    const first = startCli('download_images/run.ts', args);
    children.push(first.child);
    await waitFor(() => existsSync(join(out, LOCK_NAME)) && existsSync(join(out, '_tmp')), 30_000, 'the first run to start');
    const second = await runWithin('download_images/run.ts', [...args, '--incremental_mode', 'overwrite'], DEADLINE_MS);
    assertExit(second, 2);
    assertOneErrorLine(second.stderr, new RegExp(`in use by another run: pid ${first.child.pid} on `));
    const r = await finishWithin(first.child, first.done, DEADLINE_MS);
    assertExit(r, 0);
    assert.ok(existsSync(join(out, '00000_stats.json')), r.stderr);
    assert.equal(existsSync(join(out, LOCK_NAME)), false);
  });

  test('deduplicate run.ts and filter.ts: a held folder is refused before anything in it changes', async () => {
    const holder = sleeper();
    children.push(holder);
    await waitFor(() => existsSync(`/proc/${holder.pid}/stat`), 5000, 'the holder');
    for (const [script, extra] of [['deduplicate/run.ts', []], ['deduplicate/filter.ts', ['--min-width', '10']]] as const) {
      const dir = await tempDir();
      const input = join(dir, 'in');
      await mkdir(input);
      await writeFile(join(input, 'a.csv'), 'URL|TEXT\nhttp://x/1.jpg|one\n');
      const out = join(dir, 'out');
      await writeLock(out, { pid: holder.pid, procStart: procStart(holder.pid!) });
      await writeFile(join(out, 'part-00000.parquet'), 'a previous run');
      await writeFile(join(out, '_SUCCESS'), '');
      await writeFile(join(out, 'my_data.parquet'), 'mine');
      const before = await hashTree(dir);
      const r = await runWithin(script, ['--input', input, '--output-folder', out, ...extra], DEADLINE_MS);
      assertExit(r, 2);
      assertOneErrorLine(r.stderr, new RegExp(`out is in use by another run: pid ${holder.pid} on `));
      assert.deepEqual(await hashTree(dir), before, script);
    }
  });
});
