// Hostile-but-realistic inputs to download_images (issue 16): bad numbers are one line and exit 2
// before any work; overwrite never deletes the URL list or a user's file; one odd line of a URL
// list costs that line (named with its number), not the run.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { imagesRoute } from '../demo/images.ts';
import { gzipSync } from 'node:zlib';
import { readFile } from 'node:fs/promises';
import { cleanTextList, type RejectedLine } from '../download_images/text-list.ts';
import { openDb, sqlString, type Db } from '../lib/parquet.ts';
import { assertExit, assertOneErrorLine, assertUntouched, hashTree, runWithin } from './helpers/guarded-run.ts';

const SCRIPT = 'download_images/run.ts';
const DEADLINE_MS = 90_000;

let host: CrawlHost;
let db: Db;
before(async () => {
  host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
  host.addRoute('/images/', imagesRoute({ seed: 5 }));
  db = await openDb({ threads: 1 });
});
after(async () => {
  db.close();
  await host.close();
});

const img = (i: number): string => `${host.origin}/images/${i}.jpg`;

/** A work folder with a URL list and an output folder already holding a user's files. */
async function setup(): Promise<{ dir: string; out: string; list: string; before: Map<string, string> }> {
  const dir = await mkdtemp(join(tmpdir(), 'bad-input-images-'));
  const out = join(dir, 'out');
  await mkdir(out);
  await writeFile(join(out, 'notes.txt'), 'my notes\n');
  await writeFile(join(out, 'my_data.parquet'), 'not ours\n');
  await mkdir(join(out, 'keep'));
  await writeFile(join(out, 'keep', '00000.tar'), 'a user file that only looks like a shard\n');
  const list = join(dir, 'urls.txt');
  await writeFile(list, `${img(1)}\n${img(2)}\n`);
  return { dir, out, list, before: await hashTree(dir) };
}

async function statuses(out: string): Promise<Array<{ url: string; status: string }>> {
  const parts = (await readdir(out)).filter((n) => /^\d+\.parquet$/.test(n));
  assert.ok(parts.length > 0, `no shard parquet in ${out}`);
  return db.all(`SELECT url, status FROM read_parquet(${sqlString(join(out, '[0-9]*.parquet'))}) ORDER BY key`);
}

const common = ['--allow-private-addresses', '--timeout', '5', '--processes-count', '1', '--thread-count', '4', '--output-format', 'files'];

describe('download_images: bad numbers are one line and exit 2 before any work (item 9)', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--image_size', '0'], /--image-size must be at least 1, got 0/],
    [['--image_size', '-5'], /--image-size must be at least 1, got -5/],
    [['--processes_count', '0'], /--processes-count must be at least 1/],
    [['--thread_count', '-1'], /--thread-count must be at least 1/],
    [['--number_sample_per_shard', '0'], /--number-sample-per-shard must be at least 1/],
    [['--timeout', '0'], /--timeout must be more than 0/],
    [['--retries', '-2'], /--retries must be at least 0/],
    [['--max_shard_retry', '-1'], /--max-shard-retry must be at least 0/],
    [['--per_host_connections', '0'], /--per-host-connections must be at least 1/],
    [['--max_image_bytes', 'lots'], /--max-image-bytes: "lots" is not a size/],
    [['--max_image_area', '-1'], /--max-image-area must be more than 0/],
    [['--image_size', ''], /--image-size: expected an integer/],
  ];
  for (const [flags, pattern] of cases) {
    test(flags.join(' '), async () => {
      const { out, list, dir, before } = await setup();
      const r = await runWithin(SCRIPT, ['--url_list', list, '--output_folder', out, '--allow-private-addresses', ...flags], DEADLINE_MS);
      assertExit(r, 2);
      assertOneErrorLine(r.stderr, pattern);
      assert.equal(existsSync(join(out, '_tmp')), false);
      assert.equal(existsSync(join(out, '_lock')), false);
      await assertUntouched(dir, before);
    });
  }
});

describe('download_images --incremental_mode overwrite (item 3)', () => {
  test('a URL list inside the output folder is refused with one line before anything is deleted', async () => {
    const { dir, out } = await setup();
    const list = join(out, 'urls.txt');
    await writeFile(list, `${img(1)}\n`);
    // Output of an earlier run beside it: not deleted either, since the run stops first.
    await writeFile(join(out, '00000_stats.json'), '{}');
    await writeFile(join(out, '00000.parquet'), 'old shard');
    const before = await hashTree(dir);
    const r = await runWithin(SCRIPT, ['--url_list', list, '--output_folder', out, '--incremental_mode', 'overwrite', ...common], DEADLINE_MS);
    assertExit(r, 2);
    assertOneErrorLine(r.stderr, /--url-list .*urls\.txt is inside --output-folder/, /nothing was deleted/);
    await assertUntouched(dir, before);
    assert.deepEqual(await hashTree(dir), before);
  });

  test('the URL list as the output folder itself is refused in any mode', async () => {
    const { dir, out } = await setup();
    await writeFile(join(out, 'a.txt'), `${img(1)}\n`);
    const before = await hashTree(dir);
    const r = await runWithin(SCRIPT, ['--url_list', out, '--output_folder', out, ...common], DEADLINE_MS);
    assertExit(r, 2);
    assertOneErrorLine(r.stderr, /is the output folder itself/);
    assert.deepEqual(await hashTree(dir), before);
  });

  test('overwrite removes only what earlier runs wrote; a user file beside the shards stays byte-identical', async () => {
    const { dir, out, list } = await setup();
    // An earlier run's shards, one more than this run writes, and its leftovers.
    for (const name of ['00000.parquet', '00000_stats.json', '00007.parquet', '00007_stats.json']) await writeFile(join(out, name), 'old');
    await mkdir(join(out, '00007'));
    await writeFile(join(out, '00007', '000070000.jpg'), 'old');
    await mkdir(join(out, '_tmp'));
    await writeFile(join(out, '.tmp-dead-00003.parquet'), 'old');
    const userFiles = new Map([...(await hashTree(dir))].filter(([p]) => !/out\/(0000[07]|_tmp|\.tmp-)/.test(p)));
    const r = await runWithin(SCRIPT, ['--url_list', list, '--output_folder', out, '--incremental_mode', 'overwrite', ...common], DEADLINE_MS);
    assertExit(r, 0);
    await assertUntouched(dir, userFiles);
    const names = (await readdir(out)).sort();
    assert.deepEqual(names, ['00000', '00000.parquet', '00000_stats.json', 'keep', 'my_data.parquet', 'notes.txt']);
    assert.deepEqual((await statuses(out)).map((s) => s.status), ['success', 'success']);
  });
});

describe('download_images: one odd line of a URL list is that line, not the run (item 5)', () => {
  test('txt: a CRLF line is read; a non-UTF-8 line and a line over 1 MiB are rejected by number; the rest downloaded', async () => {
    const { dir, out, before } = await setup();
    const list = join(dir, 'odd.txt');
    const lines = [
      Buffer.from(`${img(1)}\n`),
      Buffer.from(`${img(2)}\r\n`),
      Buffer.concat([Buffer.from(`${host.origin}/images/\xff`, 'latin1'), Buffer.from('3.jpg\n')]),
      Buffer.from(`${img(4)}?pad=${'x'.repeat(2_200_000)}\n`),
      Buffer.from(`${img(5)}\n`),
    ];
    await writeFile(list, Buffer.concat(lines));
    const r = await runWithin(SCRIPT, ['--url_list', list, '--output_folder', out, ...common], DEADLINE_MS);
    assertExit(r, 0);
    assert.match(r.stderr, /odd\.txt line 3 is not UTF-8/);
    assert.match(r.stderr, /odd\.txt line 4 is over \d+ bytes/);
    assert.doesNotMatch(r.stderr, /line [125] /);
    assert.doesNotMatch(r.stderr, /Invalid Input Error|CSV Error|^\s+at /m);
    assert.match(r.stderr, /could not be read.*: 2/);
    const rows = await statuses(out);
    assert.deepEqual(rows.map((x) => x.url), [img(1), img(2), img(5)]);
    assert.deepEqual(rows.map((x) => x.status), ['success', 'success', 'success']);
    await assertUntouched(dir, before);
  });

  test('csv: an unterminated quote rejects its line only; the rows after it are read again and downloaded', async () => {
    const { dir, out, before } = await setup();
    const list = join(dir, 'odd.csv');
    await writeFile(
      list,
      [
        'url,caption',
        `${img(1)},one`,
        `${img(2)},"two, with a comma"`,
        `${img(3)},"never closed`,
        `${img(4)},four\r`,
        `${img(5)},"multi`,
        `line"`,
        '',
      ].join('\n'),
    );
    const r = await runWithin(SCRIPT, ['--url_list', list, '--input_format', 'csv', '--caption_col', 'caption', '--output_folder', out, ...common], DEADLINE_MS);
    assertExit(r, 0);
    assertOneLine(r.stderr, /odd\.csv line 4 opens a quoted field that never closes/);
    const rows = await statuses(out);
    assert.deepEqual(rows.map((x) => x.url), [img(1), img(2), img(4), img(5)]);
    assert.ok(rows.every((x) => x.status === 'success'), JSON.stringify(rows));
    const captions = await db.all<{ caption: string }>(`SELECT caption FROM read_parquet(${sqlString(join(out, '00000.parquet'))}) ORDER BY key`);
    assert.deepEqual(captions.map((c) => c.caption), ['one', 'two, with a comma', 'four', 'multi\nline']);
    await assertUntouched(dir, before);
  });
});

/** Exactly one warning line matching the pattern. */
function assertOneLine(stderr: string, pattern: RegExp): void {
  const hits = stderr.split('\n').filter((l) => pattern.test(l));
  assert.equal(hits.length, 1, stderr.slice(-2000));
  assert.match(hits[0]!, /^warning: /);
}

test('a list without the --url-col column: one line naming the columns, exit 1, no _tmp/ left, user files untouched', async () => {
  const { dir, out, before } = await setup();
  const list = join(dir, 'nourl.csv');
  await writeFile(list, `link,caption\n${img(1)},one\n`);
  const r = await runWithin(SCRIPT, ['--url_list', list, '--input_format', 'csv', '--output_folder', out, ...common], DEADLINE_MS);
  assertExit(r, 1);
  assertOneErrorLine(r.stderr, /column\(s\) url not found; the input has link, caption/);
  assert.equal(existsSync(join(out, '_tmp')), false, '_tmp/ left behind');
  assert.equal(existsSync(join(out, '_lock')), false, 'lock left behind');
  await assertUntouched(dir, before);
});

describe('text-list.ts: odd lines of txt / csv / tsv lists', () => {
  async function clean(format: 'txt' | 'csv' | 'tsv', body: Buffer, gzip = false): Promise<{ text: string; rows: number; rejects: RejectedLine[] }> {
    const dir = await mkdtemp(join(tmpdir(), 'text-list-'));
    const src = join(dir, `in.${format}${gzip ? '.gz' : ''}`);
    await writeFile(src, body);
    const rejects: RejectedLine[] = [];
    const r = await cleanTextList(src, format, gzip, join(dir, 'out'), (x) => rejects.push(x));
    return { text: await readFile(join(dir, 'out'), 'utf8'), rows: r.rows, rejects };
  }

  test('tsv with CRLF, a BOM, a row with too many fields, a short row and a repeated column name', async () => {
    const r = await clean('tsv', Buffer.from('\ufeffurl\tcap\tcap\r\nhttp://a/1\tone\tx\r\nhttp://a/2\ttwo\tx\textra\r\nhttp://a/3\r\n\r\n'));
    assert.equal(r.text, 'url,cap,cap.1\nhttp://a/1,one,x\nhttp://a/3,,\n');
    assert.equal(r.rows, 2);
    assert.deepEqual(r.rejects, [{ line: 3, reason: 'has 4 fields, the header has 3' }]);
  });

  test('a truncated .gz keeps the lines before the damage and reports where it stopped', async () => {
    const whole = gzipSync(Buffer.from(Array.from({ length: 5000 }, (_, i) => `http://a/${i}.jpg`).join('\n') + '\n'));
    const r = await clean('txt', whole.subarray(0, Math.floor(whole.length / 2)), true);
    assert.ok(r.rows > 0 && r.rows < 5000, String(r.rows));
    assert.equal(r.rejects.length, 1);
    assert.match(r.rejects[0]!.reason, /cannot be read: .*the rest of the file is lost/);
    assert.equal(r.rejects[0]!.line, r.rows + 1);
  });

  test('txt: NUL and control characters are rejected; an over-long last line without a newline too', async () => {
    const r = await clean('txt', Buffer.concat([Buffer.from('http://a/1\nhttp://a/\u0000x\nhttp://a/2\n'), Buffer.alloc(1_100_000, 0x61)]));
    assert.equal(r.text, 'http://a/1\nhttp://a/2\n');
    assert.deepEqual(r.rejects.map((x) => x.line), [2, 4]);
  });
});
