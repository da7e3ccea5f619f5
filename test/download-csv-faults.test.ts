// download_csv against the framing faults of demo/faults.ts: each file whose bytes are whole on the
// wire arrives byte-identical (a gzip-encoded CSV decoded), the broken ones end as failed lines in
// the manifest with a message, and nothing crashes or hangs.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { faultBody, faultsRoute, type FaultKind } from '../demo/faults.ts';
import { runCli } from './helpers/cli-process.ts';

const WHOLE: FaultKind[] = [
  'ok', 'short-length', 'http10-length', 'http10-close', 'close-slow-reader', 'chunked-trailers', 'gzip-image',
  'gzip-csv', 'early-hints', 'non-utf8-header', 'one-byte-writes',
];
const BROKEN: Array<[FaultKind, RegExp]> = [
  ['fin-after-headers', /^connection lost at byte 0 of \d+: /],
  ['two-lengths', /^malformed response: conflicting Content-Length headers$/],
  ['truncated', /^connection lost at byte [1-9]\d* of \d+: /],
];

let host: CrawlHost;
let out: string;

before(async () => {
  host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
  const faults = faultsRoute({ prefix: '/cahf/' });
  host.addRoute('/cahf/', async (req, res, url) => {
    if (url.pathname !== '/cahf/') return faults(req, res, url);
    const links = [...WHOLE, ...BROKEN.map(([k]) => k)].map((k) => `<a href="${k}/3.csv">${k}/3.csv</a>`).join('\n');
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<html><body><pre>\n${links}\n</pre></body></html>\n`);
  });
  out = await mkdtemp(join(tmpdir(), 'download-csv-faults-'));
});
after(async () => {
  await host.close();
  await rm(out, { recursive: true, force: true });
});

test('every whole file byte-identical, every broken one a failed manifest line with its reason; a rerun fetches only those again', async () => {
  const args = ['--url', `${host.origin}/cahf/`, '--output-folder', out, '--retries', '1', '--timeout', '5', '--allow-private-addresses'];
  const r = await runCli('download_csv/run.ts', args);
  assert.equal(r.code, 1, r.stderr);
  for (const k of WHOLE) {
    const got = await readFile(join(out, k, '3.csv'));
    assert.ok(got.equals(await faultBody(k, 3)), `${k}: ${got.length} bytes`);
  }
  const lines = (await readFile(join(out, '_manifest.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { path: string; status: string; error: string | null });
  const byKind = new Map(lines.map((l) => [l.path.split('/')[0]!, l]));
  assert.equal(byKind.size, WHOLE.length + BROKEN.length);
  for (const k of WHOLE) assert.equal(byKind.get(k)?.status, 'downloaded', `${k}: ${JSON.stringify(byKind.get(k))}`);
  for (const [k, reason] of BROKEN) {
    assert.equal(byKind.get(k)?.status, 'failed', k);
    assert.match(byKind.get(k)!.error ?? '', reason, k);
  }

  const again = await runCli('download_csv/run.ts', args);
  assert.equal(again.code, 1, again.stderr);
  const second = (await readFile(join(out, '_manifest.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { path: string; status: string });
  for (const l of second) {
    const kind = l.path.split('/')[0] as FaultKind;
    assert.equal(l.status, WHOLE.includes(kind) ? 'already_complete' : 'failed', l.path);
  }
});
