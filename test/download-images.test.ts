// End to end through the real CLI (worker processes, downloader, resizer) against the demo crawl
// host with the images and faults routes: a mixed input of good images and faulty URLs.
import assert from 'node:assert/strict';
import { runCli as runCliProcess, type CliRun } from './helpers/cli-process.ts';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { FAULT_KINDS, faultsRoute, faultUrl, type FaultKind } from '../demo/faults.ts';
import { imagesRoute } from '../demo/images.ts';
import { FLAGS } from '../download_images/options.ts';
import { openDb, sqlString, type Db } from '../lib/parquet.ts';
import { readTarSamples } from '../lib/webdataset/tar-reader.ts';

const RUN = join(import.meta.dirname, '..', 'download_images', 'run.ts');
const TIMEOUT_S = 2;

let host: CrawlHost;
let dir: string;
let db: Db;

// Faults whose outcome does not depend on the address policy (loopback must be allowed here).
const KINDS: FaultKind[] = [
  'ok', 'redirect-ok', '404', '500', '429-then-ok', '429-always', 'reset', 'close-early', 'slow-headers',
  'slow-drip', 'endless', 'truncated', 'huge-declared', 'huge-undeclared', 'bomb', 'html', 'redirect-loop',
  'robots-noai', 'robots-otherbot', 'http10-length', 'http10-close', 'close-slow-reader', 'fin-after-headers',
  'chunked-trailers', 'gzip-image', 'early-hints', 'two-lengths', 'non-utf8-header', 'one-byte-writes',
];

interface Expect {
  url: string;
  caption: string;
  status: string;
  error?: string | RegExp;
}

before(async () => {
  host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
  host.addRoute('/images/', imagesRoute({ seed: 3 }));
  host.addRoute('/faults/', faultsRoute({ hugeBytes: 3_000_000, retryAfterSeconds: 1 }));
  dir = await mkdtemp(join(tmpdir(), 'dl-images-'));
  db = await openDb({ threads: 1 });
});
after(async () => {
  db.close();
  await host.close();
  await rm(dir, { recursive: true, force: true });
});

const runCli = (args: string[]): Promise<CliRun> => runCliProcess(RUN, args);

/** A CSV of good images and one URL per fault kind, in a fixed shuffled order. */
async function mixedInput(path: string): Promise<Expect[]> {
  const rows: Expect[] = [];
  for (let i = 0; i < 14; i++) rows.push({ url: `${host.origin}/images/${i}.jpg`, caption: `image ${i}, "quoted"`, status: 'success' });
  KINDS.forEach((k, i) => {
    const f = FAULT_KINDS[k];
    rows.push({ url: faultUrl(host.origin, k, i), caption: `fault ${k}`, status: f.status, error: f.download.ok ? undefined : f.download.error });
  });
  rows.sort((a, b) => (a.url.length * 31 + a.caption.length) % 7 - (b.url.length * 31 + b.caption.length) % 7 || a.url.localeCompare(b.url));
  const csv = 'URL,TEXT,NSFW\n' + rows.map((r, i) => `${r.url},"${r.caption.replace(/"/g, '""')}",${i % 2 ? 'UNLIKELY' : 'NSFW'}`).join('\n') + '\n';
  await writeFile(path, csv);
  return rows;
}

const baseArgs = (input: string, out: string): string[] => [
  '--url_list', input, '--input_format', 'csv', '--url_col', 'URL', '--caption_col', 'TEXT',
  '--output_format', 'webdataset', '--output_folder', out, '--processes_count', '2', '--thread_count', '16',
  '--image_size', '64', '--number_sample_per_shard', '7', '--save_additional_columns', '["NSFW"]',
  '--timeout', String(TIMEOUT_S), '--max-image-bytes', '1MB', '--allow-private-addresses', 'True',
];

test('--help lists every option with its default', async () => {
  const r = await runCli(['--help']);
  assert.equal(r.code, 0);
  for (const [name, def] of Object.entries(FLAGS)) {
    assert.ok(r.stdout.includes(`--${name}`), `--help lacks --${name}`);
    if ('default' in def && def.default !== null && typeof def.default !== 'boolean') assert.ok(r.stdout.includes(`default: ${Array.isArray(def.default) ? JSON.stringify(def.default) : def.default}`));
  }
  const bad = await runCli(['--url_list', 'x', '--output_format', 'tfrecord']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /tfrecord is not supported/);
  const bull = await runCli(['--url_list', 'x', '--distributor', 'bullmq']);
  assert.equal(bull.code, 2);
  assert.match(bull.stderr, /--distributor bullmq needs --redis-url/);
});

test('mixed input end to end: every row once in the parquet with its status, successes in the tar, then incremental', async () => {
  const input = join(dir, 'mixed.csv');
  const out = join(dir, 'out');
  const expected = await mixedInput(input);
  const started = Date.now();
  const r = await runCli(baseArgs(input, out));
  const seconds = (Date.now() - started) / 1000;
  assert.equal(r.code, 0, r.stderr);
  // Faults that wait for the deadline end within it (plus start-up and the rest of the work).
  assert.ok(seconds < 40, `took ${seconds}s`);

  const shards = Math.ceil(expected.length / 7);
  const names = (await readdir(out)).sort();
  const want: string[] = [];
  for (let s = 0; s < shards; s++) {
    const n = String(s).padStart(5, '0');
    want.push(`${n}.parquet`, `${n}.tar`, `${n}_stats.json`);
  }
  assert.deepEqual(names, want.sort());

  // Every input row exactly once, with its status and error.
  const rows = await db.all<Record<string, unknown>>(`SELECT * FROM read_parquet(${sqlString(join(out, '*.parquet'))}, filename=true)`);
  assert.equal(rows.length, expected.length);
  const byUrl = new Map(rows.map((row) => [row.url as string, row]));
  assert.equal(byUrl.size, expected.length);
  expected.forEach((e, i) => {
    const row = byUrl.get(e.url)!;
    assert.ok(row, e.url);
    const key = String(Math.floor(i / 7) * 10 + (i % 7)).padStart(6, '0');
    assert.equal(row.key, key, e.url);
    assert.equal(row.caption, e.caption);
    assert.equal(row.status, e.status, `${e.url}: ${String(row.error_message)}`);
    if (e.error instanceof RegExp) assert.match(String(row.error_message), e.error, e.url);
    else if (typeof e.error === 'string') assert.equal(row.error_message, e.error, e.url);
    if (e.status === 'success') {
      assert.equal(row.error_message, null);
      assert.equal(row.width, 64);
      assert.equal(row.height, 64);
      assert.match(String(row.sha256), /^[0-9a-f]{64}$/);
      assert.equal(typeof row.exif, 'string');
    } else {
      assert.equal(row.width, null);
      assert.equal(row.sha256, null);
    }
  });
  const schema = await db.all<{ column_name: string; column_type: string }>(`DESCRIBE SELECT * FROM ${sqlString(join(out, '00000.parquet'))}`);
  assert.deepEqual(schema.map((c) => `${c.column_name} ${c.column_type}`), [
    'NSFW VARCHAR', 'caption VARCHAR', 'url VARCHAR', 'key VARCHAR', 'status VARCHAR', 'error_message VARCHAR',
    'width INTEGER', 'height INTEGER', 'original_width INTEGER', 'original_height INTEGER', 'exif VARCHAR', 'sha256 VARCHAR',
  ]);

  // Successes in the tars: jpg/json/txt adjacent, keys matching the parquet, json in img2dataset's key order.
  const successKeys = new Set(rows.filter((x) => x.status === 'success').map((x) => x.key as string));
  const tarKeys = new Set<string>();
  for (let s = 0; s < shards; s++) {
    for await (const sample of readTarSamples(join(out, `${String(s).padStart(5, '0')}.tar`))) {
      assert.deepEqual([...sample.members.keys()], ['jpg', 'json', 'txt']);
      const meta = JSON.parse(sample.members.get('json')!.toString()) as Record<string, unknown>;
      assert.deepEqual(Object.keys(meta), ['NSFW', 'caption', 'url', 'key', 'status', 'error_message', 'width', 'height', 'original_width', 'original_height', 'exif', 'sha256']);
      assert.equal(meta.key, sample.key);
      assert.equal(sample.members.get('txt')!.toString(), meta.caption);
      assert.equal(sample.members.get('jpg')!.subarray(0, 2).toString('hex'), 'ffd8');
      assert.ok(!tarKeys.has(sample.key));
      tarKeys.add(sample.key);
    }
  }
  assert.deepEqual([...tarKeys].sort(), [...successKeys].sort());

  const stats0 = await readFile(join(out, '00000_stats.json'), 'utf8');
  const s0 = JSON.parse(stats0) as Record<string, unknown>;
  assert.deepEqual(Object.keys(s0), ['count', 'successes', 'failed_to_download', 'failed_to_resize', 'duration', 'start_time', 'end_time', 'status_dict']);
  assert.equal(s0.count, 7);
  assert.match(stats0, /^\{\n {4}"count": 7,\n/);
  assert.match(r.stderr, /status counts:/);

  // Incremental: shard 1 looks unfinished (no stats, a leftover temp file); only it is redone.
  const before1 = await stat(join(out, '00000.tar'));
  await rm(join(out, '00001_stats.json'));
  await rm(join(out, '00001.tar'));
  await writeFile(join(out, '.tmp-dead-00001.tar'), 'partial');
  const again = await runCli([...baseArgs(input, out), '--incremental_mode', 'incremental']);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, new RegExp(`shards already finished and skipped: ${shards - 1}\\b`));
  assert.match(again.stderr, /shards finished in this run: 1/);
  assert.equal((await stat(join(out, '00000.tar'))).mtimeMs, before1.mtimeMs);
  assert.deepEqual((await readdir(out)).sort(), want.sort());
  let redone = 0;
  for await (const _ of readTarSamples(join(out, '00001.tar'))) redone++;
  assert.equal(redone, rows.filter((x) => String(x.key).startsWith('00001') && x.status === 'success').length);
});

test('files and parquet output, N=1000 key width, overwrite and extend', async () => {
  const input = join(dir, 'few.txt');
  await writeFile(input, `${host.origin}/images/1.png\n${host.origin}/faults/404/1\n${host.origin}/images/2.jpg\n`);
  const out = join(dir, 'files');
  const args = ['--url_list', input, '--output_folder', out, '--image_size', '32', '--number_sample_per_shard', '1000',
    '--thread_count', '4', '--allow_private_addresses', '--caption_col', 'TEXT', '--compute_hash', 'md5', '--extract_exif', 'False'];
  let r = await runCli(args);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((await readdir(join(out, '00000'))).sort(), ['00000000.jpg', '00000000.json', '00000000.txt', '00000002.jpg', '00000002.json', '00000002.txt']);
  // txt input: caption_col turns on .txt output, but it is empty.
  assert.equal(await readFile(join(out, '00000', '00000000.txt'), 'utf8'), '');
  const meta = await readFile(join(out, '00000', '00000002.json'), 'utf8');
  assert.match(meta, /^\{\n {4}"url": "http:\/\/127\.0\.0\.1:\d+\/images\/2\.jpg",\n {4}"key": "00000002",\n {4}"status": "success",\n {4}"error_message": null,\n {4}"width": 32,\n {4}"height": 32,\n {4}"original_width": \d+,\n {4}"original_height": \d+,\n {4}"md5": "[0-9a-f]{32}"\n\}$/);
  const rows = await db.all<Record<string, unknown>>(`SELECT key, status FROM ${sqlString(join(out, '00000.parquet'))} ORDER BY key`);
  assert.deepEqual(rows, [{ key: '00000000', status: 'success' }, { key: '00000001', status: 'failed_to_download' }, { key: '00000002', status: 'success' }]);

  // extend: a second run numbers its shards after the existing ones.
  r = await runCli([...args, '--incremental_mode', 'extend']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok((await readdir(out)).includes('00001_stats.json'));
  assert.ok((await readdir(join(out, '00001'))).includes('00001000.jpg'));

  // overwrite + parquet output: the image column sits last, failures have a null image.
  r = await runCli([...args, '--incremental_mode', 'overwrite', '--output_format', 'parquet']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((await readdir(out)).sort(), ['00000.parquet', '00000_stats.json']);
  const cols = await db.all<{ column_name: string; column_type: string }>(`DESCRIBE SELECT * FROM ${sqlString(join(out, '00000.parquet'))}`);
  assert.deepEqual(cols.map((c) => c.column_name), ['url', 'key', 'status', 'error_message', 'width', 'height', 'original_width', 'original_height', 'md5', 'jpg']);
  assert.equal(cols.at(-1)!.column_type, 'BLOB');
  const imgs = await db.all<{ key: string; n: number | null }>(`SELECT key, octet_length(jpg)::INTEGER AS n FROM ${sqlString(join(out, '00000.parquet'))} ORDER BY key`);
  assert.ok(imgs[0]!.n! > 100);
  assert.equal(imgs[1]!.n, null);
});
