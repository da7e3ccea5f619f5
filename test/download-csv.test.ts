import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { runCli, startCli } from './helpers/cli-process.ts';
import { filesBelow } from './helpers/file-tree.ts';

const SCRIPT = 'download_csv/run.ts';
const CSV_GLOBS = '*.csv,*.csv.gz';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'download-csv-'));
}

async function manifest(dir: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(join(dir, '_manifest.jsonl'), 'utf8');
  return text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

const isCsv = (p: string): boolean => p.endsWith('.csv') || p.endsWith('.csv.gz');

describe('download_csv against the demo crawl host', () => {
  let host: CrawlHost;
  before(async () => {
    host = await startCrawlHost({ seed: 7, files: 10, rowsPerFile: 60 });
  });
  after(async () => host.close());

  test('crawls both listing styles, stays in the tree, never loops, and downloads every CSV byte-identical', async () => {
    const out = await tempDir();
    const r = await runCli(SCRIPT, ['--url', host.crawlUrl, '--output_folder', out, '--include', CSV_GLOBS, '--allow-private-addresses']);
    assert.equal(r.code, 0, r.stderr);
    const csvs = [...host.files.keys()].filter(isCsv);
    assert.ok(csvs.some((p) => p.endsWith('.gz')) && csvs.some((p) => p.endsWith('.csv')));
    for (const p of csvs) {
      const got = await readFile(join(out, p));
      assert.ok(got.equals(host.files.get(p)!), `${p} differs from the served bytes`);
    }
    // Files the include pattern does not match are not fetched.
    for (const p of host.files.keys()) if (!isCsv(p)) assert.equal(existsSync(join(out, p)), false, p);
    const lines = await manifest(out);
    assert.deepEqual(lines.map((l) => l.path).sort(), csvs.sort());
    for (const l of lines) {
      assert.equal(l.status, 'downloaded');
      assert.equal(l.error, null);
      assert.equal(l.size, host.files.get(l.path as string)!.length);
    }
    // Never outside /cah/, each listing read once, the symlink loop cut short.
    const paths = [...host.stats.requestsByPath.keys()];
    assert.ok(paths.every((p) => p.startsWith('/cah/')), paths.join(' '));
    for (const [p, n] of host.stats.requestsByPath) if (p.endsWith('/')) assert.equal(n, 1, `${p} listed ${n} times`);
    assert.ok(!paths.some((p) => p.startsWith('/cah/loop/loop/loop/')), 'followed the loop too far');
    assert.match(r.stderr, /summary: 10 files matched/);
    assert.match(r.stderr, /symlink loop/);
  });

  test('a rerun skips complete files and transfers no file body again', async () => {
    const out = await tempDir();
    const first = await runCli(SCRIPT, ['--url', host.crawlUrl, '--output-folder', out, '--include', CSV_GLOBS, '--allow-private-addresses']);
    assert.equal(first.code, 0, first.stderr);
    host.stats.reset();
    const second = await runCli(SCRIPT, ['--url', host.crawlUrl, '--output-folder', out, '--include', CSV_GLOBS, '--allow-private-addresses']);
    assert.equal(second.code, 0, second.stderr);
    const csvBytes = [...host.stats.bytesByPath].filter(([p]) => isCsv(p)).reduce((s, [, n]) => s + n, 0);
    assert.equal(csvBytes, 0);
    assert.ok((await manifest(out)).every((l) => l.status === 'already_complete'));
  });

  test('--dry-run lists the planned files and writes nothing', async () => {
    const out = join(await tempDir(), 'never-created');
    const r = await runCli(SCRIPT, ['--url', host.crawlUrl, '--output-folder', out, '--include', '*.csv', '--allow-private-addresses', '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    const planned = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { path: string; status: string });
    assert.deepEqual(planned.map((p) => p.path).sort(), [...host.files.keys()].filter((p) => p.endsWith('.csv')).sort());
    assert.ok(planned.every((p) => p.status === 'planned'));
    assert.equal(existsSync(out), false);
  });

  test('refuses the loopback host when private addresses are not allowed', async () => {
    const out = await tempDir();
    host.stats.reset();
    for (const url of [host.crawlUrl, `http://localhost:${host.port}/cah/`]) {
      const r = await runCli(SCRIPT, ['--url', url, '--output-folder', out, '--retries', '0']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /refused to connect to (127\.0\.0\.1|localhost) \(127\.0\.0\.1\): loopback/);
      assert.match(r.stderr, /--allow-private-addresses/);
    }
    assert.equal(host.stats.requestsByPath.size, 0, 'a request reached the server');
  });
});

test('a 404 file is reported in the manifest and the exit code is non-zero', async () => {
  const host = await startCrawlHost({ seed: 3, files: 4, rowsPerFile: 20, missingCsv: true });
  try {
    const out = await tempDir();
    const r = await runCli(SCRIPT, ['--url', host.crawlUrl, '--output-folder', out, '--allow-private-addresses', '--retries', '2']);
    assert.equal(r.code, 1);
    const lines = await manifest(out);
    const missing = lines.find((l) => String(l.path).endsWith('MISSING_ON_SERVER.csv'));
    assert.ok(missing, 'the missing file is in the manifest');
    assert.equal(missing.status, 'failed');
    assert.match(String(missing.error), /HTTP 404/);
    // 404 is final: no retries spent on it.
    assert.equal(host.stats.requestsByPath.get('/cah/20210818/job-000/MISSING_ON_SERVER.csv'), 1);
    const ok = lines.filter((l) => l !== missing);
    assert.ok(ok.length > 0 && ok.every((l) => l.status === 'downloaded'));
    assert.match(r.stderr, /MISSING_ON_SERVER\.csv: HTTP 404/);
  } finally {
    await host.close();
  }
});

test('SIGKILL mid-download, then a rerun, finishes with at most 10% extra bytes sent', async () => {
  // Big enough files, slowly served, so the kill lands mid-transfer.
  const host = await startCrawlHost({ seed: 11, files: 6, rowsPerFile: 4000, throttleBytesPerSec: 400_000 });
  try {
    const out = await tempDir();
    const csvs = [...host.files.keys()].filter(isCsv);
    const total = csvs.reduce((s, p) => s + host.files.get(p)!.length, 0);
    const args = ['--url', host.crawlUrl, '--output-folder', out, '--include', CSV_GLOBS, '--allow-private-addresses', '--parallel', '3'];
    const { child, done } = startCli(SCRIPT, args);
    // Wait until a good share of the bytes is on disk in .part files, then kill -9.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const parts = await partBytes(out);
      if (parts > total * 0.3) break;
      assert.ok(Date.now() < deadline, 'the download never got going');
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    const killed = await done;
    assert.equal(killed.signal, 'SIGKILL');
    assert.ok((await partBytes(out)) > 0, 'partial data kept');
    const r = await runCli(SCRIPT, args);
    assert.equal(r.code, 0, r.stderr);
    for (const p of csvs) assert.ok((await readFile(join(out, p))).equals(host.files.get(p)!), `${p} differs`);
    const sent = [...host.stats.bytesByPath].filter(([p]) => isCsv(p)).reduce((s, [, n]) => s + n, 0);
    assert.ok(sent <= total * 1.1, `server sent ${sent} bytes for ${total} bytes of files`);
    assert.equal(await partBytes(out), 0, 'no .part file left');
  } finally {
    await host.close();
  }
});

test('a partial file whose server copy changed is fetched again whole (If-Range)', async () => {
  const body = Buffer.from('SAMPLE_ID|URL|TEXT|similarity\n' + '1|http://a.example/x.jpg|new caption|0.31\n'.repeat(50));
  const host = await startCrawlHost({ staticFiles: new Map([['day/a.csv', body]]) });
  try {
    const out = await tempDir();
    // A leftover from an older version of the file, with its old validator.
    await mkdir(join(out, 'day'), { recursive: true });
    await writeFile(join(out, 'day/a.csv.part'), 'OLD CONTENT THAT MUST NOT SURVIVE');
    await writeFile(join(out, 'day/a.csv.part.json'), JSON.stringify({ url: `${host.crawlUrl}day/a.csv`, validator: '"stale-etag"', total: 999 }));
    const r = await runCli(SCRIPT, ['--url', host.crawlUrl, '--output-folder', out, '--allow-private-addresses']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(join(out, 'day/a.csv'))).equals(body));
    assert.equal(existsSync(join(out, 'day/a.csv.part.json')), false);
  } finally {
    await host.close();
  }
});

async function partBytes(dir: string): Promise<number> {
  let n = 0;
  for (const p of await filesBelow(dir)) if (p.endsWith('.part')) n += (await stat(p)).size;
  return n;
}
