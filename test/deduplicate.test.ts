// Stage 2 on CSVs from the demo crawl generator: counts checked against counts computed here,
// first-occurrence rows, exact captions, rejects with physical line numbers, determinism, kill + rerun.
import assert from 'node:assert/strict';
import { runCli, startCli } from './helpers/cli-process.ts';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { COLUMN_SETS, csvLine, generateCrawlCsvs, type CsvFile } from '../demo/crawl-csv.ts';
import { openDb, type Db } from '../lib/parquet.ts';
import { deduplicate, type DedupOptions, type DedupSummary } from '../deduplicate/pipeline.ts';

const AWKWARD = 'pipe | and "doubled" quotes\nacross two lines';
let root: string;
let input: string;
let files: CsvFile[];
let db: Db;

function writeCrawl(dir: string, crawl: CsvFile[]): void {
  for (const f of crawl) {
    mkdirSync(dirname(join(dir, f.path)), { recursive: true });
    writeFileSync(join(dir, f.path), f.content);
  }
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'dedup-test-'));
  input = join(root, 'csv');
  files = generateCrawlCsvs({ imageBaseUrl: 'http://127.0.0.1:9/', files: 14, rowsPerFile: 300, seed: 7 });
  // One more hand-made file: the awkward caption twice (a duplicate of itself) and once in a later file.
  const columns = ['SAMPLE_ID', 'URL', 'TEXT', 'HEIGHT', 'WIDTH', 'LICENSE', 'NSFW', 'similarity'];
  const rows = [
    { SAMPLE_ID: '1', URL: 'http://x/awkward.jpg', TEXT: AWKWARD, HEIGHT: '12.7', WIDTH: '480.0', LICENSE: '?', NSFW: 'UNLIKELY', similarity: '0.31' },
    { SAMPLE_ID: '2', URL: 'http://x/awkward.jpg', TEXT: AWKWARD, HEIGHT: '1', WIDTH: '1', LICENSE: '?', NSFW: 'UNLIKELY', similarity: '0.5' },
    { SAMPLE_ID: 'x3', URL: 'http://x/other.jpg', TEXT: 'plain', HEIGHT: '', WIDTH: '1e3', LICENSE: '', NSFW: 'NSFW', similarity: 'abc' },
  ];
  const text = csvLine(columns) + rows.map((r) => csvLine(columns.map((c) => r[c as keyof typeof r]))).join('');
  files.push({ path: '00000000/awkward.csv', columnSet: 'hybrid', columns, rows, brokenLines: [], gzip: false, content: Buffer.from(text) });
  writeCrawl(input, files);
  db = await openDb();
});

after(() => {
  db.close();
  rmSync(root, { recursive: true, force: true });
});

const options = (out: string, extra: Partial<DedupOptions> = {}): DedupOptions => ({
  input,
  outputFolder: out,
  parts: 3,
  seed: 0,
  delimiter: '|',
  memoryLimit: '500MB',
  threads: 2,
  requireColumn: 'similarity',
  fixSwappedDimensions: false,
  ...extra,
});

const partBytes = (out: string): Buffer[] => readdirSync(out).filter((n) => /^part-\d+\.parquet$/.test(n)).sort().map((n) => readFileSync(join(out, n)));

/** The row a correct run keeps for each (URL, TEXT): the first in (path, line) order. */
function expectedFirstRows(): Map<string, Record<string, string>> {
  const first = new Map<string, Record<string, string>>();
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : 1))) {
    if (!f.columns.includes('similarity')) continue;
    for (const r of f.rows) {
      const key = JSON.stringify([r.URL, r.TEXT]);
      if (!first.has(key)) first.set(key, r);
    }
  }
  return first;
}

/** Spark's non-ANSI integer cast, written independently of the SQL under test. */
function sparkInt(v: string | undefined): number | null {
  const t = (v ?? '').trim();
  if (!/^[+-]?\d*(\.\d*)?$/.test(t) || /^[+-]?$/.test(t)) return null;
  return Math.trunc(Number(t.startsWith('.') || t.startsWith('-.') || t.startsWith('+.') ? t.replace('.', '0.') : t));
}

let summary: DedupSummary;
let out: string;

test('deduplicate: unique rows, first occurrence, casts, accounting and rejects match an independent count', async () => {
  out = join(root, 'out');
  summary = await deduplicate(options(out));
  const expected = expectedFirstRows();
  assert.equal(summary.rows_unique, expected.size);

  const schema = await db.all<{ column_name: string; column_type: string }>(`DESCRIBE SELECT * FROM '${out}/part-*.parquet'`);
  assert.deepEqual(
    schema.map((c) => `${c.column_name} ${c.column_type}`),
    ['SAMPLE_ID BIGINT', 'URL VARCHAR', 'TEXT VARCHAR', 'HEIGHT INTEGER', 'WIDTH INTEGER', 'LICENSE VARCHAR', 'NSFW VARCHAR', 'similarity DOUBLE'],
  );
  const got = await db.all<Record<string, unknown>>(`SELECT * FROM '${out}/part-*.parquet'`);
  assert.equal(got.length, expected.size);
  for (const row of got) {
    const want = expected.get(JSON.stringify([row.URL, row.TEXT]));
    assert.ok(want, `unexpected row ${JSON.stringify(row.URL)} ${JSON.stringify(row.TEXT)}`);
    const sid = sparkInt(want.SAMPLE_ID);
    assert.equal(row.SAMPLE_ID, sid === null ? null : BigInt(want.SAMPLE_ID!.trim().split('.')[0]!), `SAMPLE_ID of ${row.URL}`);
    assert.equal(row.HEIGHT, want.HEIGHT === undefined ? null : sparkInt(want.HEIGHT));
    assert.equal(row.WIDTH, want.WIDTH === undefined ? null : sparkInt(want.WIDTH));
    assert.equal(row.LICENSE, want.LICENSE ? want.LICENSE : null);
    assert.equal(row.NSFW, want.NSFW ? want.NSFW : null);
    const sim = Number(want.similarity);
    assert.equal(row.similarity, want.similarity === 'abc' ? null : sim);
  }
  // The caption with `|`, `""` and a newline is byte-exact, and its first row (12.7 -> 12, 480.0 -> 480) won.
  const awkward = got.filter((r) => r.TEXT === AWKWARD);
  assert.equal(awkward.length, 1);
  assert.equal(awkward[0]!.SAMPLE_ID, 1n);
  assert.equal(awkward[0]!.HEIGHT, 12);
  assert.equal(awkward[0]!.WIDTH, 480);

  // Every row read is accounted for.
  const read = files.filter((f) => f.columns.includes('similarity'));
  const skipped = files.filter((f) => !f.columns.includes('similarity'));
  const rowsIn = (fs: CsvFile[]): number => fs.reduce((a, f) => a + f.rows.length + f.brokenLines.length, 0);
  assert.equal(summary.rows_read, rowsIn(files));
  assert.equal(summary.rows_in_skipped_files, rowsIn(skipped));
  assert.equal(summary.rows_rejected, read.reduce((a, f) => a + f.brokenLines.length, 0));
  assert.ok(summary.rows_rejected > 0);
  assert.equal(summary.rows_unique + summary.duplicates_removed + summary.rows_rejected + summary.rows_in_skipped_files, summary.rows_read);
  assert.equal(summary.files_read, read.length);
  assert.deepEqual(summary.files_skipped, { 'missing column similarity': skipped.length });

  // Null casts: only values that were present and did not cast.
  const nonEmpty = (c: string, bad: (v: string) => boolean): number =>
    read.reduce((a, f) => a + f.rows.filter((r) => r[c] !== undefined && r[c]!.trim() !== '' && bad(r[c]!)).length, 0);
  assert.equal(summary.null_casts.WIDTH, nonEmpty('WIDTH', (v) => sparkInt(v) === null));
  assert.equal(summary.null_casts.HEIGHT, nonEmpty('HEIGHT', (v) => sparkInt(v) === null));
  assert.equal(summary.null_casts.SAMPLE_ID, 1);
  assert.equal(summary.null_casts.similarity, 1);
  assert.ok(summary.null_casts.WIDTH! > 1, 'the generator writes some n/a widths');

  // Rejects carry the physical line numbers the generator recorded (embedded newlines counted).
  const rejects = await db.all<{ file: string; line: bigint; reason: string; raw: string }>(`SELECT * FROM '${out}/_rejects/rejects.parquet' ORDER BY file, line`);
  const want = read.flatMap((f) => f.brokenLines.map((l) => `${f.path}:${l}`)).sort();
  assert.deepEqual(rejects.map((r) => `${r.file}:${r.line}`).sort(), want);
  assert.ok(rejects.every((r) => r.reason.length > 0 && r.raw.length > 0));

  const onDisk = JSON.parse(readFileSync(join(out, '_summary.json'), 'utf8'));
  assert.deepEqual(Object.keys(onDisk).slice(0, 9), ['files_read', 'files_skipped', 'rows_read', 'rows_rejected', 'null_casts', 'rows_unique', 'duplicates_removed', 'parts', 'seconds']);
  assert.ok(existsSync(join(out, '_SUCCESS')));
  assert.ok(!existsSync(join(out, '_tmp')), 'the spill/staging folder is removed');
  assert.equal(partBytes(out).length, 3);
});

test('deduplicate: --fix-swapped-dimensions swaps HEIGHT and WIDTH', async () => {
  const fixed = join(root, 'fixed');
  await deduplicate(options(fixed, { fixSwappedDimensions: true }));
  const [r] = await db.all<{ n: bigint }>(`SELECT count(*) AS n FROM '${out}/part-*.parquet' a JOIN '${fixed}/part-*.parquet' b USING (URL, TEXT)
    WHERE a.HEIGHT IS NOT DISTINCT FROM b.WIDTH AND a.WIDTH IS NOT DISTINCT FROM b.HEIGHT`);
  assert.equal(Number(r!.n), summary.rows_unique);
});

test('deduplicate: same seed gives byte-identical parts, another seed another order of the same rows', async () => {
  const again = join(root, 'again');
  await deduplicate(options(again, { threads: 1 }));
  assert.deepEqual(partBytes(again), partBytes(out));
  const other = join(root, 'seed1');
  await deduplicate(options(other, { seed: 1 }));
  assert.notDeepEqual(partBytes(other), partBytes(out));
  const order = async (dir: string): Promise<string[]> =>
    (await db.all<{ k: string }>(`SELECT URL || TEXT AS k FROM read_parquet('${dir}/part-*.parquet', filename=true) ORDER BY filename, file_row_number`)).map((r) => r.k);
  const [a, b] = [await order(out), await order(other)];
  assert.notDeepEqual(a, b);
  assert.deepEqual([...a].sort(), [...b].sort());
});

test('deduplicate: a run killed with SIGKILL keeps the earlier complete output as it was, and a rerun gives the same bytes', async () => {
  const big = join(root, 'big');
  writeCrawl(big, generateCrawlCsvs({ imageBaseUrl: 'http://127.0.0.1:9/', files: 40, rowsPerFile: 2500, seed: 3 }));
  const clean = join(root, 'big-clean');
  await deduplicate(options(clean, { input: big }));
  const killed = join(root, 'big-killed');
  // An earlier complete output with another seed, so a half-replaced folder would show.
  await deduplicate(options(killed, { input: big, seed: 5 }));
  const earlier = partBytes(killed);

  const cliArgs = ['--input', big, '--output-folder', killed, '--parts', '3', '--memory-limit', '500MB'];
  const run = (): Promise<{ code: number | null; signal: NodeJS.Signals | null; sawWork: boolean }> =>
    new Promise((resolve) => {
      const { child } = startCli('deduplicate/run.ts', cliArgs);
      let sawWork = false;
      const poll = setInterval(() => {
        // The rejects file is staged after loading and before the parts: kill between the two.
        if (existsSync(join(killed, '_tmp', 'staging', '_rejects', 'rejects.parquet'))) {
          sawWork = true;
          clearInterval(poll);
          child.kill('SIGKILL');
        }
      }, 5);
      child.on('exit', (code, signal) => {
        clearInterval(poll);
        resolve({ code, signal, sawWork });
      });
    });
  const r = await run();
  assert.equal(r.signal, 'SIGKILL', 'the run must be killed before it completes; make the input bigger if this fails');
  assert.ok(r.sawWork);
  // The kill came before the swap: the earlier output is still whole and still marked complete.
  assert.ok(existsSync(join(killed, '_SUCCESS')), 'the earlier output keeps its _SUCCESS');
  assert.deepEqual(partBytes(killed), earlier);

  const rerun = await runCli('deduplicate/run.ts', cliArgs);
  assert.equal(rerun.code, 0);
  assert.deepEqual(partBytes(killed), partBytes(clean));
  assert.deepEqual(readFileSync(join(killed, '_rejects', 'rejects.parquet')), readFileSync(join(clean, '_rejects', 'rejects.parquet')));
  assert.ok(existsSync(join(killed, '_SUCCESS')));
});

test('deduplicate: an unreadable file is skipped and counted, its batch-mates still read; batching does not change the bytes', async () => {
  const dir = join(root, 'with-broken');
  const crawl = generateCrawlCsvs({ imageBaseUrl: 'http://127.0.0.1:9/', files: 12, rowsPerFile: 200, seed: 11 });
  writeCrawl(dir, crawl);
  const clean = join(root, 'with-broken-clean');
  const base = await deduplicate(options(clean, { input: dir }));
  // A gzip followed by junk: its header line still reads; the gzip check over the whole stream
  // finds the junk.
  const columns = COLUMN_SETS.hybrid;
  let text = csvLine(columns);
  for (let i = 0; i < 20_000; i++) text += csvLine([String(i), `http://x/broken/${i}.jpg`, `caption ${i}`, '10', '10', '?', 'UNLIKELY', '0.3']);
  const hybrid = crawl.filter((f) => f.columnSet === 'hybrid');
  assert.ok(hybrid.length >= 2, 'the broken file needs batch-mates of its column set');
  writeFileSync(join(dir, dirname(hybrid[0]!.path), 'zz-broken.csv.gz'), Buffer.concat([gzipSync(Buffer.from(text)), Buffer.from('not gzip')]));
  const broken = join(root, 'with-broken-out');
  const s = await deduplicate(options(broken, { input: dir, filesPerBatch: 3 }));
  // Our own gzip check finds it before DuckDB does, and names it.
  assert.equal(s.files_skipped['damaged gzip'], 1);
  assert.deepEqual(s.files_not_read.map((f) => f.file), [join(dirname(hybrid[0]!.path), 'zz-broken.csv.gz')]);
  assert.equal(s.files_read, base.files_read);
  assert.equal(s.rows_read, base.rows_read);
  assert.equal(s.rows_unique, base.rows_unique);
  assert.deepEqual(partBytes(broken), partBytes(clean));
});

test('deduplicate CLI: a missing input is a one-line error and exit 1', async () => {
  const { code, stderr } = await runCli('deduplicate/run.ts', ['--input', join(root, 'nope'), '--output-folder', join(root, 'x')]);
  assert.equal(code, 1);
  const lines = stderr.trim().split('\n');
  assert.match(lines.at(-1)!, /^error: input .*nope does not exist/);
});
