// Hostile but realistic inputs to the stage-2 CLIs (issue 16), run as a user would: each run ends
// within a deadline, with the expected exit code and one line naming the file or flag, and every
// file the run does not own is byte-identical afterwards (an earlier complete output included,
// when the run fails).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { COLUMN_SETS, csvLine, generateCrawlCsvs } from '../demo/crawl-csv.ts';
import { deduplicate, type DedupOptions, type DedupSummary } from '../deduplicate/pipeline.ts';
import { main as filterMain, whereStructureProblem } from '../deduplicate/filter.ts';
import { startCli, type CliRun } from './helpers/cli-process.ts';

let root: string;
/** Good crawl CSVs, never written to by any test. */
let csv: string;
/** A complete earlier deduplicate output (4 parts), copied by tests that need one. */
let goodDedup: string;
let goodSummary: DedupSummary;
/** The same rows in 2 parts, as filter input with other part names. */
let twoParts: string;
let counter = 0;
const fresh = (name: string): string => join(root, `${name}-${counter++}`);

const DEADLINE_MS = 60_000;

/** Runs a CLI with a kill deadline: a run that would hang (or loop until V8 dies) fails the test. */
async function run(script: string, args: readonly string[]): Promise<CliRun> {
  const { child, done } = startCli(script, args);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, DEADLINE_MS);
  const r = await done;
  clearTimeout(timer);
  assert.ok(!timedOut, `${script} ${args.join(' ')} did not end within ${DEADLINE_MS / 1000}s (killed)`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  return r;
}
const dedup = (args: readonly string[]): Promise<CliRun> => run('deduplicate/run.ts', args);
const filter = (args: readonly string[]): Promise<CliRun> => run('deduplicate/filter.ts', args);
const lastLine = (r: CliRun): string => r.stderr.trim().split('\n').at(-1)!;

/** sha256 of every file below dir by relative path, and every folder (`name/`), so a leftover empty `_tmp/` shows. */
function hashes(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(dir)) return out;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        out.set(`${relative(dir, p)}/`, 'folder');
        walk(p);
      }
      else out.set(relative(dir, p), createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  walk(dir);
  return out;
}
const assertSame = (before: Map<string, string>, dir: string, what: string): void => assert.deepEqual(hashes(dir), before, `${what} changed`);

function writeCrawl(dir: string, seed: number, files = 4, rowsPerFile = 150): void {
  for (const f of generateCrawlCsvs({ imageBaseUrl: 'http://127.0.0.1:9/', files, rowsPerFile, seed })) {
    mkdirSync(dirname(join(dir, f.path)), { recursive: true });
    writeFileSync(join(dir, f.path), f.content);
  }
}

const options = (input: string, out: string, extra: Partial<DedupOptions> = {}): DedupOptions => ({
  input, outputFolder: out, parts: 4, seed: 0, delimiter: '|', memoryLimit: '500MB', threads: 2,
  requireColumn: 'similarity', fixSwappedDimensions: false, ...extra,
});

/** The crawl plus extra files, in a new input folder. */
function inputWith(extra: Record<string, Buffer | string>): string {
  const dir = fresh('input');
  cpSync(csv, dir, { recursive: true });
  for (const [name, content] of Object.entries(extra)) writeFileSync(join(dir, name), content);
  return dir;
}

/** A copy of the earlier complete output, to run over. */
function earlierOutput(): string {
  const dir = fresh('earlier');
  cpSync(goodDedup, dir, { recursive: true });
  return dir;
}

const summaryOf = (dir: string): DedupSummary => JSON.parse(readFileSync(join(dir, '_summary.json'), 'utf8')) as DedupSummary;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'bad-input-dedup-'));
  csv = join(root, 'csv');
  writeCrawl(csv, 21);
  goodDedup = join(root, 'good');
  goodSummary = await deduplicate(options(csv, goodDedup));
  twoParts = join(root, 'two-parts');
  await deduplicate(options(csv, twoParts, { parts: 2 }));
});

after(() => rmSync(root, { recursive: true, force: true }));

// 1. filter.ts deleted every *.parquet in its output folder.
test('filter: a parquet file it did not write in --output-folder is refused with one line, and left alone', async () => {
  const out = fresh('filter-foreign');
  mkdirSync(out);
  writeFileSync(join(out, 'my_data.parquet'), 'the user\'s own data');
  writeFileSync(join(out, 'notes.txt'), 'notes');
  const before = hashes(out);
  const r = await filter(['--input', goodDedup, '--output-folder', out, '--min-width', '100']);
  assert.equal(r.code, 2);
  assert.match(lastLine(r), /^error: --output-folder .* holds my_data\.parquet, which no earlier run .*wrote/);
  assertSame(before, out, 'the output folder');
});

test('filter: a rerun replaces only the parts its own earlier run wrote; a failed one keeps the earlier output and _SUCCESS', async () => {
  const out = fresh('filter-rerun');
  assert.equal(await filterMain(['--input', goodDedup, '--output-folder', out, '--min-width', '100']), 0);
  writeFileSync(join(out, 'notes.txt'), 'the user\'s notes beside the parts');
  const listed = JSON.parse(readFileSync(join(out, '_filter.json'), 'utf8')).files as string[];
  assert.deepEqual(listed, ['part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet', 'part-00003.parquet']);

  // A failing run (a --where that names no column) changes nothing, _SUCCESS included.
  const earlier = hashes(out);
  const bad = await filter(['--input', twoParts, '--output-folder', out, '--where', 'no_such_column > 1']);
  assert.equal(bad.code, 2);
  assert.match(lastLine(bad), /^error: --where "no_such_column > 1" is not a usable SQL boolean expression/);
  assertSame(earlier, out, 'the earlier filter output');

  // From 2 parts: the earlier run's parts 2 and 3 go, the user's file stays.
  const r = await filter(['--input', twoParts, '--output-folder', out, '--min-width', '100']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readdirSync(out).sort(), ['_SUCCESS', '_filter.json', 'notes.txt', 'part-00000.parquet', 'part-00001.parquet']);
  assert.equal(readFileSync(join(out, 'notes.txt'), 'utf8'), 'the user\'s notes beside the parts');
  assert.deepEqual(JSON.parse(readFileSync(join(out, '_filter.json'), 'utf8')).files, ['part-00000.parquet', 'part-00001.parquet']);
});

// 2. A truncated .csv.gz was read up to the break, silently.
test('deduplicate: a truncated .csv.gz is skipped whole, named as a damaged gzip, and counted in the summary', async () => {
  let text = csvLine(COLUMN_SETS.hybrid);
  for (let i = 0; i < 20_000; i++) text += csvLine([String(i), `http://x/trunc/${i}.jpg`, `caption ${i} of a truncated download`, '10', '10', '?', 'UNLIKELY', '0.3']);
  const gz = gzipSync(Buffer.from(text));
  const input = inputWith({ 'zz-truncated.csv.gz': gz.subarray(0, gz.length >> 1) });
  const inputBefore = hashes(input);
  const out = fresh('out');
  const r = await dedup(['--input', input, '--output-folder', out, '--parts', '4']);
  assert.equal(r.code, 0, r.stderr);
  const warning = r.stderr.split('\n').filter((l) => l.includes('zz-truncated.csv.gz'));
  assert.equal(warning.length, 2, r.stderr); // the skip, and the closing reminder
  assert.match(warning[0]!, /^warning: .*zz-truncated\.csv\.gz: skipped whole, damaged gzip \(unexpected end of file\).*re-download it/);
  const s = summaryOf(out);
  assert.equal(s.files_skipped['damaged gzip'], 1);
  assert.deepEqual(s.files_not_read, [{ file: 'zz-truncated.csv.gz', reason: 'damaged gzip: unexpected end of file' }]);
  // None of its readable first half slipped in: the counts are those of the good files alone.
  assert.equal(s.rows_read, goodSummary.rows_read);
  assert.equal(s.rows_unique, goodSummary.rows_unique);
  assertSame(inputBefore, input, 'the input folder');
});

// 4. A NUL byte in a header aborted the whole run with an error naming no file.
test('deduplicate: a UTF-16 or binary file among the CSVs is skipped and named; a rerun over a good output completes', async () => {
  const utf16 = Buffer.from('\uFEFF' + csvLine(COLUMN_SETS.hybrid) + csvLine(['1', 'http://x/a.jpg', 'a', '1', '1', '?', 'UNLIKELY', '0.3']), 'utf16le');
  const input = inputWith({
    'export-utf16.csv': utf16,
    'image.csv': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0x0d, 10, 0, 1, 2]),
    'packed.csv': gzipSync(Buffer.from(csvLine(COLUMN_SETS.hybrid) + csvLine(['1', 'http://x/p.jpg', 'p', '1', '1', '?', 'UNLIKELY', '0.3']))),
  });
  const inputBefore = hashes(input);
  const out = earlierOutput();
  const r = await dedup(['--input', input, '--output-folder', out, '--parts', '4']);
  assert.equal(r.code, 0, r.stderr);
  for (const name of ['export-utf16.csv', 'image.csv']) {
    assert.match(r.stderr, new RegExp(`^warning: .*${name.replace('.', '\\.')}: skipped whole, binary or UTF-16 file \\(NUL byte in the header line\\)`, 'm'));
  }
  assert.match(r.stderr, /^warning: .*packed\.csv: skipped whole, gzip data in a \.csv file .*rename it to \.csv\.gz/m);
  const s = summaryOf(out);
  assert.equal(s.files_skipped['binary or UTF-16 file'], 2);
  assert.equal(s.files_skipped['gzip data in a .csv file'], 1);
  assert.equal(s.rows_unique, goodSummary.rows_unique);
  assert.ok(existsSync(join(out, '_SUCCESS')));
  assertSame(inputBefore, input, 'the input folder');
});

test('deduplicate: a run that fails leaves an earlier complete output byte-identical, _SUCCESS included, and no _tmp', async () => {
  // Every input file unusable: binary, truncated gzip, CR-only.
  const input = fresh('all-bad');
  mkdirSync(input);
  writeFileSync(join(input, 'a.csv'), Buffer.from([0, 1, 2, 3, 10]));
  writeFileSync(join(input, 'b.csv.gz'), gzipSync(Buffer.from('x'.repeat(100_000))).subarray(0, 100));
  writeFileSync(join(input, 'c.csv'), 'SAMPLE_ID|URL|TEXT|similarity\r1|http://x/a.jpg|a|0.3\r');
  const out = earlierOutput();
  const before = hashes(out);
  const r = await dedup(['--input', input, '--output-folder', out, '--parts', '4']);
  assert.equal(r.code, 1);
  assert.match(lastLine(r), /^error: none of the 3 input files can be read \(.*\); nothing was written/);
  assertSame(before, out, 'the earlier output');

  // The same into a new folder: nothing is left behind, not even the folder.
  const fresher = fresh('never-made');
  const again = await dedup(['--input', input, '--output-folder', fresher, '--parts', '4']);
  assert.equal(again.code, 1);
  // The folder may stay when something else (the output lock) made it first, but empty.
  assert.ok(!existsSync(fresher) || readdirSync(fresher).length === 0, 'a failed run leaves nothing (no _tmp) behind');
});

test('deduplicate: an input without any CSV is one line and exit 1, the earlier output untouched', async () => {
  const input = fresh('no-csv');
  mkdirSync(input);
  writeFileSync(join(input, 'readme.txt'), 'no data here');
  const out = earlierOutput();
  const before = hashes(out);
  const r = await dedup(['--input', input, '--output-folder', out]);
  assert.equal(r.code, 1);
  assert.match(lastLine(r), /^error: no \*\.csv or \*\.csv\.gz files found under .*no-csv/);
  assertSame(before, out, 'the earlier output');
});

test('deduplicate: a file with CR-only line endings is named for what it is, not "duplicate column names"', async () => {
  const input = inputWith({ 'mac.csv': csvLine(COLUMN_SETS.hybrid).replace(/\n/g, '\r') + '1|http://x/mac.jpg|mac|1|1|?|UNLIKELY|0.3\r' });
  const out = fresh('out');
  const r = await dedup(['--input', input, '--output-folder', out, '--parts', '4']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^warning: .*mac\.csv: skipped whole, CR-only line endings .*convert them to LF/m);
  assert.doesNotMatch(r.stderr, /duplicate column/);
  assert.equal(summaryOf(out).files_skipped['CR-only line endings'], 1);
});

// 7, 8, 11: arguments checked before any work.
for (const [flags, message] of [
  [['--delimiter', ''], /^error: --delimiter "": must be exactly one character/],
  [['--delimiter', '||'], /^error: --delimiter "\|\|": must be exactly one character/],
  [['--parts', '1e9'], /^error: --parts 1000000000: must be between 1 and 100000/],
  [['--parts', '0'], /^error: --parts 0: must be between 1 and 100000/],
  [['--memory-limit', 'lots'], /^error: --memory-limit "lots": not a size/],
  [['--memory_limit', '0GB'], /^error: --memory-limit "0GB": must be more than 0/],
  [['--threads', '0'], /^error: --threads 0: must be between 1 and 1024/],
] as const) {
  test(`deduplicate: ${flags.join(' ')} is one line naming the flag, exit 2, before any work`, async () => {
    const out = fresh('never-made');
    const inputBefore = hashes(csv);
    const r = await dedup(['--input', csv, '--output-folder', out, ...flags]);
    assert.equal(r.code, 2);
    assert.match(lastLine(r), message);
    assert.ok(!existsSync(out), 'nothing is written');
    assertSame(inputBefore, csv, 'the input folder');
  });
}

test('deduplicate: --parts above the number of unique rows is refused, the earlier output untouched', async () => {
  const out = earlierOutput();
  const before = hashes(out);
  const r = await dedup(['--input', csv, '--output-folder', out, '--parts', String(goodSummary.rows_unique + 1)]);
  assert.equal(r.code, 2);
  assert.match(lastLine(r), new RegExp(`^error: --parts ${goodSummary.rows_unique + 1} is more than the ${goodSummary.rows_unique} unique rows`));
  assertSame(before, out, 'the earlier output');
  assert.equal(statSync(out).isDirectory(), true);
});

test('filter: --memory-limit lots is one line naming the flag, exit 2', async () => {
  const out = fresh('never-made');
  const r = await filter(['--input', goodDedup, '--output-folder', out, '--memory-limit', 'lots']);
  assert.equal(r.code, 2);
  assert.match(lastLine(r), /^error: --memory-limit "lots": not a size/);
  assert.ok(!existsSync(out));
});

// Smaller: a crafted --where passed the check, then failed as a raw parser error after dropping _SUCCESS.
for (const where of ['TRUE) AS keep FROM range(1) --', '1=1) OR (1=1', 'WIDTH > 1; DROP TABLE x']) {
  test(`filter: --where ${JSON.stringify(where)} is refused before the output is touched, exit 2`, async () => {
    const out = fresh('filter-where');
    assert.equal(await filterMain(['--input', goodDedup, '--output-folder', out, '--min-width', '100']), 0);
    const before = hashes(out);
    const r = await filter(['--input', goodDedup, '--output-folder', out, '--min-height', '5', '--where', where]);
    assert.equal(r.code, 2);
    assert.match(lastLine(r), /^error: --where ".*" is not a usable SQL boolean expression: /);
    assertSame(before, out, 'the earlier filter output');
  });
}

test('deduplicate: a parquet file it did not write in --output-folder is refused, and left alone', async () => {
  const out = fresh('dedup-foreign');
  mkdirSync(out);
  writeFileSync(join(out, 'part-00000.parquet'), 'someone else\'s part');
  const before = hashes(out);
  const r = await dedup(['--input', csv, '--output-folder', out, '--parts', '4']);
  assert.equal(r.code, 2);
  assert.match(lastLine(r), /^error: --output-folder .* holds part-00000\.parquet, which no earlier run/);
  assertSame(before, out, 'the output folder');
});

test('filter: the --where structure check refuses only text that escapes its parentheses, not quoted look-alikes', () => {
  for (const ok of ["URL LIKE '%--%'", "TEXT = 'a)'' OR (''b'", 'TEXT = $$a)$$', 'TEXT = $q1$;)$q1$', '"odd)name" > 1', '(WIDTH > 1) AND (HEIGHT > 1)']) {
    assert.equal(whereStructureProblem(ok), null, ok);
  }
  for (const [bad, why] of [
    ['1=1) OR (1=1', /closes a parenthesis/],
    ['(WIDTH > 1', /never closed/],
    ['WIDTH > 1 -- and the rest', /comment/],
    ['WIDTH > 1 /* x */', /comment/],
    ["URL = 'open", /string is never closed/],
    ['TRUE; SELECT 1', /;/],
  ] as const) {
    assert.match(whereStructureProblem(bad) ?? '', why, bad);
  }
});

test('deduplicate: an --output-folder that is a file, or lies under one, is one line and exit 2, the file untouched', async () => {
  const file = fresh('a-file');
  writeFileSync(file, 'not a folder');
  for (const [out, message] of [
    [file, /^error: --output-folder .* is a file, not a folder/],
    [join(file, 'sub'), /^error: --output-folder .*sub cannot be used \(ENOTDIR/],
  ] as const) {
    const r = await dedup(['--input', csv, '--output-folder', out, '--parts', '4']);
    assert.equal(r.code, 2);
    assert.match(lastLine(r), message);
    assert.equal(readFileSync(file, 'utf8'), 'not a folder');
  }
});
