// Hostile-but-realistic inputs to download_csv (issue 16): every bad flag is one line and exit 2
// before any work; URLs never share a local file; failures on our side are permanent and say so;
// files in the output folder the run does not own are byte-identical afterwards.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { renderListing } from '../demo/listing-html.ts';
import { normalizeUrl, relativePath } from '../download_csv/local-path.ts';
import { assertExit, assertOneErrorLine, assertUntouched, hashTree, runWithin } from './helpers/guarded-run.ts';

const SCRIPT = 'download_csv/run.ts';
const DEADLINE_MS = 60_000;

/** An output folder already holding a user's files, and their hashes. */
async function userFolder(): Promise<{ out: string; before: Map<string, string> }> {
  const out = await mkdtemp(join(tmpdir(), 'bad-input-csv-'));
  await writeFile(join(out, 'notes.txt'), 'my notes\n');
  await mkdir(join(out, 'mine'));
  await writeFile(join(out, 'mine', 'data.csv'), 'a,b\n1,2\n');
  return { out, before: await hashTree(out) };
}

async function manifest(dir: string): Promise<Array<{ url: string; path: string; size: number | null; status: string; error: string | null }>> {
  const text = await readFile(join(dir, '_manifest.jsonl'), 'utf8');
  return text.trim().split('\n').map((l) => JSON.parse(l));
}

describe('download_csv: bad flags are one line and exit 2 before any work (items 10, 11)', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['--parallel 0', ['--parallel', '0'], /--parallel must be at least 1, got 0/],
    ['--parallel -3', ['--parallel', '-3'], /--parallel must be at least 1/],
    ['--max-depth -1', ['--max-depth', '-1'], /--max-depth must be at least 0, got -1/],
    ["--include ''", ['--include', ''], /--include: .*empty pattern/],
    ['--retries -1', ['--retries', '-1'], /--retries must be at least 0/],
    ['--timeout 0', ['--timeout', '0'], /--timeout must be more than 0/],
    ['--max-file-bytes lots', ['--max-file-bytes', 'lots'], /--max-file-bytes: "lots" is not a size/],
    ['--max-file-bytes 0', ['--max-file-bytes', '0'], /--max-file-bytes must be at least 1 byte/],
  ];
  for (const [name, extra, pattern] of cases) {
    test(name, async () => {
      const { out, before } = await userFolder();
      const r = await runWithin(SCRIPT, ['--url', 'http://127.0.0.1:9/cah/', '--output-folder', out, ...extra], DEADLINE_MS);
      assertExit(r, 2);
      assertOneErrorLine(r.stderr, pattern);
      assert.doesNotMatch(r.stderr, /crawling|done/);
      assert.equal(existsSync(join(out, '_manifest.jsonl')), false);
      await assertUntouched(out, before);
    });
  }
  for (const url of ['not a url', 'ftp://example.org/cah/', '']) {
    test(`--url '${url}'`, async () => {
      const { out, before } = await userFolder();
      const r = await runWithin(SCRIPT, ['--url', url, '--output-folder', out], DEADLINE_MS);
      assertExit(r, 2);
      assertOneErrorLine(r.stderr, /--url/, new RegExp(url.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')));
      await assertUntouched(out, before);
    });
  }
});

describe('download_csv against hostile listings', () => {
  let host: CrawlHost;
  /** Raw request path (undecoded) -> body: each spelling of a name gets its own bytes. */
  const bodies = new Map<string, Buffer>();
  const longName = `${'x'.repeat(250)}.csv`;
  before(async () => {
    host = await startCrawlHost({ staticFiles: new Map([['ok.csv', Buffer.from('a,b\n1,2\n')]]) });
    const listings: Record<string, Array<{ href: string; label: string; isDir: boolean }>> = {
      '/clash/': [
        { href: 'same.csv', label: 'same.csv', isDir: false },
        { href: 'same%2Ecsv', label: 'same.csv', isDir: false },
        { href: 's%61me.csv', label: 'same.csv', isDir: false },
        { href: 'S%61me.csv', label: 'Same.csv', isDir: false },
        { href: 'sub%2Fsame.csv', label: 'sub/same.csv', isDir: false },
        { href: 'a%20b.csv', label: 'a b.csv', isDir: false },
        { href: 'a%2520b.csv', label: 'a%20b.csv', isDir: false },
        { href: 'caf%C3%A9.csv', label: 'café.csv', isDir: false },
        { href: 'sub/', label: 'sub/', isDir: true },
      ],
      '/clash/sub/': [{ href: 'same.csv', label: 'same.csv', isDir: false }],
      '/perm/': [
        { href: encodeURIComponent(longName), label: longName, isDir: false },
        { href: 'blocker/', label: 'blocker/', isDir: true },
        { href: 'x.csv.part', label: 'x.csv.part', isDir: false },
        { href: '_manifest.jsonl', label: '_manifest.jsonl', isDir: false },
        { href: 'fine.csv', label: 'fine.csv', isDir: false },
      ],
      '/perm/blocker/': [{ href: 'inner.csv', label: 'inner.csv', isDir: false }],
    };
    for (const prefix of ['/clash/', '/perm/']) {
      host.addRoute(prefix, (req, res, url) => {
        const raw = url.pathname;
        const entries = listings[raw];
        if (entries) {
          res.writeHead(200, { 'content-type': 'text/html' });
          res.end(renderListing('apache', raw, entries));
          return;
        }
        let body = bodies.get(raw);
        if (!body) {
          body = Buffer.from(`id,served_as\n1,${raw}\n`);
          bodies.set(raw, body);
        }
        res.writeHead(200, { 'content-type': 'text/csv', 'content-length': body.length });
        res.end(req.method === 'HEAD' ? undefined : body);
      });
    }
  });
  after(async () => host.close());

  test('URLs that decode to one name never share a file: the manifest and the disk agree (item 12)', async () => {
    // Three runs, since the old code only sometimes exited 13 after "done".
    for (let run = 0; run < 3; run++) {
      const { out, before } = await userFolder();
      const r = await runWithin(SCRIPT, ['--url', `${host.origin}/clash/`, '--output-folder', out, '--allow-private-addresses', '--retries', '0'], DEADLINE_MS);
      assertExit(r, 0);
      assert.match(r.stderr, /done: every matched file is complete/);
      const lines = await manifest(out);
      const paths = lines.map((l) => l.path);
      assert.equal(new Set(paths).size, paths.length, `two manifest lines share a path: ${paths.join(', ')}`);
      assert.equal(new Set(lines.map((l) => l.url)).size, lines.length);
      // same.csv, same%2Ecsv and s%61me.csv are one URL (RFC 3986 6.2.2.2); S%61me.csv is Same.csv.
      assert.deepEqual(
        [...paths].sort(),
        ['Same.csv', 'a b.csv', 'a%2520b.csv', 'café.csv', 'same.csv', 'sub%2Fsame.csv', 'sub/same.csv'].sort(),
      );
      for (const l of lines) {
        assert.equal(l.status, 'downloaded', JSON.stringify(l));
        const served = bodies.get(new URL(l.url).pathname);
        assert.ok(served, `no body served for ${l.url}`);
        assert.ok((await readFile(join(out, l.path))).equals(served), `${l.path} does not hold the bytes of ${l.url}`);
      }
      const onDisk = [...(await hashTree(out)).keys()].filter((p) => !before.has(p) && p !== '_manifest.jsonl');
      assert.deepEqual(onDisk.sort(), [...paths].sort(), 'files on disk differ from the manifest');
      assert.equal(existsSync(join(out, '_lock')), false, 'lock left behind');
      await assertUntouched(out, before);
    }
  });

  test('failures on our side are permanent, named, never "partial data is kept"; user files untouched (smaller)', async () => {
    const { out } = await userFolder();
    // A user's file where the listing has a folder.
    await writeFile(join(out, 'blocker'), 'my file, not a folder\n');
    const before = await hashTree(out);
    const started = Date.now();
    const r = await runWithin(SCRIPT, ['--url', `${host.origin}/perm/`, '--output-folder', out, '--allow-private-addresses', '--include', '*', '--retries', '3'], DEADLINE_MS);
    assertExit(r, 1);
    // No retry backoff spent on failures a retry cannot fix (3 retries would wait 3.5 s or more).
    assert.ok(Date.now() - started < 20_000);
    assert.doesNotMatch(r.stderr, /retry 1\/3/);
    assert.doesNotMatch(r.stderr, /partial data is kept/);
    const lines = await manifest(out);
    const byPath = new Map(lines.map((l) => [l.path, l]));
    assert.equal(byPath.get('fine.csv')?.status, 'downloaded');
    const long = byPath.get(longName);
    assert.equal(long?.status, 'failed');
    assert.match(long!.error!, /ENAMETOOLONG/);
    const inner = byPath.get('blocker/inner.csv');
    assert.equal(inner?.status, 'failed');
    assert.match(inner!.error!, /cannot write .*blocker\/inner\.csv: .*(ENOTDIR|EEXIST)/);
    assert.match(byPath.get('x.csv.part')!.error!, /partial downloads/);
    assert.match(byPath.get('_manifest.jsonl')!.error!, /own file/);
    for (const p of [longName, 'blocker/inner.csv', 'x.csv.part', '_manifest.jsonl']) {
      const l = byPath.get(p)!;
      const line = r.stderr.split('\n').find((s) => s.startsWith('error:') && s.includes(l.url));
      assert.ok(line, `no error line names ${l.url}`);
      assert.match(line, /not retried|not downloaded/);
    }
    await assertUntouched(out, before);
  });
});

test('URL -> local path is one-to-one: different URLs after RFC 3986 normalisation never share a path', () => {
  // Random paths from characters that can be written literally or escaped, in both hex cases.
  const alphabet = ['a', 'A', '.', '-', '~', '_', '%', '+', ',', ';', '=', '!', '$', '&', "'", '(', ')', '*', ':', '@', '/', ' ', '"', '#', '?', '{', '}', '`', 'é', '\u0001', '\\'];
  let seed = 12345;
  const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
  const root = new URL('http://h.example/cah/');
  const byPath = new Map<string, string>();
  for (let i = 0; i < 5000; i++) {
    let href = '';
    for (let k = 1 + rand(6); k > 0; k--) {
      const c = alphabet[rand(alphabet.length)]!;
      const mode = rand(3);
      if (mode === 0 || c === '%') href += mode === 0 && c === '%' ? '%25' : encodeURIComponent(c);
      else if (mode === 1) href += [...Buffer.from(c)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
      else href += c === '#' || c === '?' ? encodeURIComponent(c) : c;
    }
    let url: URL;
    try {
      url = normalizeUrl(new URL(`x${href}.csv`, root));
    } catch {
      continue;
    }
    if (!url.pathname.startsWith(root.pathname)) continue;
    const path = relativePath(root, url);
    const other = byPath.get(path);
    assert.ok(other === undefined || other === url.href, `${other} and ${url.href} both map to ${path}`);
    byPath.set(path, url.href);
  }
  assert.ok(byPath.size > 1000, `only ${byPath.size} distinct URLs`);
});
