// Bounds a hostile or huge input cannot break. --timeout is an absolute deadline per URL: servers
// that drip, never answer or never stop cannot stretch a run. And a shard's images never pile up
// in memory, parquet output included. Through the real CLI against the demo host's fault catalogue plus a body that
// trickles forever below the size cap, so only the deadline can end it.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startCrawlHost, type CrawlHost, type RouteHandler } from '../demo/crawl-host.ts';
import { FAULT_KINDS, faultsRoute, faultUrl, type FaultKind } from '../demo/faults.ts';
import { imagesRoute } from '../demo/images.ts';
import { cli, toConfig } from '../download_images/options.ts';
import { createShardWriter, type SampleRecord } from '../download_images/writers.ts';
import { openDb, sqlString, type Db } from '../lib/parquet.ts';
import { readTarSamples } from '../lib/webdataset/tar-reader.ts';
import { REPO_ROOT, startCli } from './helpers/cli-process.ts';

const RUN = join(REPO_ROOT, 'download_images', 'run.ts');
const TIMEOUT_S = 2;
const THREADS = 8;
/** Process start-up (tsx, DuckDB, sharp) and writing the shard. */
const MARGIN_S = 15;

let host: CrawlHost;
let dir: string;
let db: Db;

/** 200 OK, then 4 kB every 20 ms forever: 400 kB in the 2 s deadline, well under the 1 MB cap. */
const trickle: RouteHandler = (_req, res) => {
  res.writeHead(200, { 'content-type': 'image/jpeg' });
  const chunk = Buffer.alloc(4096, 0xff);
  const timer = setInterval(() => {
    if (!res.destroyed) res.write(chunk);
  }, 20);
  res.on('close', () => clearInterval(timer));
};

before(async () => {
  host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
  host.addRoute('/images/', imagesRoute({ seed: 5 }));
  host.addRoute('/faults/', faultsRoute({ hugeBytes: 3_000_000, retryAfterSeconds: 1 }));
  host.addRoute('/trickle/', trickle);
  dir = await mkdtemp(join(tmpdir(), 'dl-deadline-'));
  db = await openDb({ threads: 1 });
});

after(async () => {
  db.close();
  await host.close();
  await rm(dir, { recursive: true, force: true });
});

interface Row {
  url: string;
  status: string;
  error?: string | RegExp;
  waitsForDeadline: boolean;
}

test('slow-drip, never-answering, endless and trickling servers: every row ends with a status, the run within rows x deadline / threads', async () => {
  const rows: Row[] = [];
  // The whole catalogue except the redirects to private / metadata addresses, which this test's
  // --allow-private-addresses would really try to reach.
  const kinds = (Object.keys(FAULT_KINDS) as FaultKind[]).filter((k) => k !== 'redirect-metadata' && k !== 'redirect-private');
  kinds.forEach((k, i) => {
    const f = FAULT_KINDS[k];
    rows.push({ url: faultUrl(host.origin, k, i), status: f.status, error: f.download.ok ? undefined : f.download.error, waitsForDeadline: f.waitsForDeadline === true });
  });
  for (let i = 0; i < 8; i++) {
    for (const k of ['slow-drip', 'slow-headers', 'endless'] as const) {
      const f = FAULT_KINDS[k];
      rows.push({ url: faultUrl(host.origin, k, 100 + i), status: f.status, error: f.download.ok ? undefined : f.download.error, waitsForDeadline: f.waitsForDeadline === true });
    }
    rows.push({ url: `${host.origin}/trickle/${i}`, status: 'failed_to_download', error: 'timed out', waitsForDeadline: true });
  }
  for (let i = 0; i < 12; i++) rows.push({ url: `${host.origin}/images/${i}.jpg`, status: 'success', waitsForDeadline: false });
  // Interleave so the slow rows are spread over the whole shard, not bunched at one end.
  rows.sort((a, b) => ((a.url.length * 7919) % 13) - ((b.url.length * 7919) % 13) || a.url.localeCompare(b.url));
  const input = join(dir, 'input.txt');
  await writeFile(input, rows.map((r) => r.url).join('\n') + '\n');
  const slow = rows.filter((r) => r.waitsForDeadline).length;
  assert.ok(slow >= 3 * THREADS, `only ${slow} rows wait for the deadline: the bound would not bite`);

  const out = join(dir, 'out');
  const budgetS = (rows.length * TIMEOUT_S) / THREADS + MARGIN_S;
  const started = Date.now();
  const run = startCli(RUN, [
    '--url_list', input, '--output_format', 'webdataset', '--output_folder', out, '--processes_count', '1',
    '--thread_count', String(THREADS), '--timeout', String(TIMEOUT_S), '--image_size', '32',
    '--number_sample_per_shard', '1000', '--max_image_bytes', '1MB', '--allow_private_addresses', 'True',
  ]);
  // Past twice the budget the run is hung, not slow: stop it so the test reports instead of hanging.
  const guard = setTimeout(() => run.child.kill('SIGKILL'), budgetS * 2000);
  const r = await run.done;
  clearTimeout(guard);
  const seconds = (Date.now() - started) / 1000;
  console.log(`${rows.length} rows (${slow} wait for the ${TIMEOUT_S} s deadline), ${THREADS} threads: ${seconds.toFixed(1)} s, budget ${budgetS} s`);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(seconds <= budgetS, `took ${seconds} s, budget ${budgetS} s`);
  // And the deadline rows really waited (the bound above is not met by failing them early).
  assert.ok(seconds >= (slow * TIMEOUT_S) / THREADS, `took only ${seconds} s for ${slow} deadline rows`);

  assert.deepEqual((await readdir(out)).sort(), ['00000.parquet', '00000.tar', '00000_stats.json']);
  const got = await db.all<{ key: string; url: string; status: string; error_message: string | null }>(
    `SELECT key, url, status, error_message FROM ${sqlString(join(out, '00000.parquet'))}`,
  );
  assert.equal(got.length, rows.length);
  const byUrl = new Map(got.map((g) => [g.url, g]));
  assert.equal(byUrl.size, rows.length);
  rows.forEach((want, i) => {
    const g = byUrl.get(want.url);
    assert.ok(g, `${want.url} has no row`);
    assert.equal(g.key, String(i).padStart(8, '0'));
    assert.equal(g.status, want.status, `${want.url}: ${g.error_message}`);
    if (want.error instanceof RegExp) assert.match(String(g.error_message), want.error, want.url);
    else if (want.error !== undefined) assert.equal(g.error_message, want.error, want.url);
    else if (want.status === 'success') assert.equal(g.error_message, null, want.url);
    else assert.ok(g.error_message, want.url);
  });
  const tarKeys: string[] = [];
  for await (const s of readTarSamples(join(out, '00000.tar'))) tarKeys.push(s.key);
  assert.deepEqual(tarKeys.sort(), got.filter((g) => g.status === 'success').map((g) => g.key).sort());
});

test('--output-format parquet: images leave memory in parts of 100 rows, not all at the end of the shard', async () => {
  const out = join(dir, 'parquet-memory');
  const config = toConfig(cli.parse(['--url-list', 'unused', '--output-folder', out, '--output-format', 'parquet', '--compute-hash', 'None', '--extract-exif', 'False']).flags);
  await mkdir(out, { recursive: true });
  const wdb = await openDb({ threads: 1 });
  let sampler: NodeJS.Timeout | undefined;
  const ROWS = 4000;
  const SIZE = 100_000;
  const WARM = 500;
  try {
    await wdb.run(`CREATE TABLE shard_in AS SELECT 'http://x/' || range AS url, range AS __rn FROM range(${ROWS})`);
    const writer = await createShardWriter({
      db: wdb, config, inputTable: 'shard_in', inputColumns: [{ name: 'url', type: 'VARCHAR' }], shardName: '00000', outputFolder: out,
    });
    // One buffer reused (DuckDB copies it), so the JS side adds nothing per row.
    const image = randomBytes(SIZE);
    const md5s: string[] = [];
    // Measured from a point where several parts have gone out (DuckDB and the allocator have
    // grown to their working size): from there, memory must not follow the rows written.
    let warm = 0;
    let peak = 0;
    // Written in reverse input order: the parquet keeps completion order.
    for (let i = 0; i < ROWS; i++) {
      const rn = ROWS - 1 - i;
      image.writeUInt32BE(rn, 0);
      md5s.push(createHash('md5').update(image).digest('hex'));
      const key = String(rn).padStart(9, '0');
      const rec: SampleRecord = {
        rowNumber: rn, key, status: 'success', errorMessage: null, width: 8, height: 8, originalWidth: 8, originalHeight: 8,
        exif: null, hash: null, image, meta: { url: `http://x/${rn}`, key }, caption: null,
      };
      await writer.write(rec);
      if (i === WARM) {
        warm = peak = process.memoryUsage().rss;
        sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
      }
      if (warm) peak = Math.max(peak, process.memoryUsage().rss);
    }
    const files = await writer.finish();
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage().rss);
    const grewMb = (peak - warm) / 2 ** 20;
    const totalMb = (ROWS * SIZE) / 2 ** 20;
    console.log(`parquet output, ${ROWS} x ${SIZE / 1000} kB images (${totalMb.toFixed(0)} MB): RSS grew ${grewMb.toFixed(0)} MB after row ${WARM}, up to the shard file`);
    // Buffering the shard's images would grow by about all of them (and more to write them out).
    assert.ok(grewMb < totalMb / 4, `RSS grew ${grewMb} MB`);

    assert.equal(files.length, 1);
    const file = sqlString(files[0]!.temp);
    const rows = await wdb.all<{ url: string; key: string; m: string; n: number }>(`SELECT url, key, md5(jpg) m, octet_length(jpg)::INTEGER n FROM ${file}`);
    assert.equal(rows.length, ROWS);
    rows.forEach((r, i) => {
      const rn = ROWS - 1 - i;
      assert.equal(r.key, String(rn).padStart(9, '0'));
      assert.equal(r.url, `http://x/${rn}`);
      assert.equal(r.n, SIZE);
      assert.equal(r.m, md5s[i]);
    });
    const groups = await wdb.all<{ n: number }>(`SELECT max(row_group_num_rows)::INTEGER n FROM parquet_metadata(${file})`);
    assert.ok(groups[0]!.n <= 100, `row groups of ${groups[0]!.n} rows`);
    // Only the shard file under its temporary name is left, no parts.
    assert.deepEqual(await readdir(out), [files[0]!.temp.slice(out.length + 1)]);
  } finally {
    clearInterval(sampler);
    wdb.close();
  }
});
