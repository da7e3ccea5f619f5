// stats.ts and filter.ts on a small deduplicated crawl, checked against direct DuckDB queries.
import assert from 'node:assert/strict';
import { runCli } from './helpers/cli-process.ts';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { generateCrawlCsvs } from '../demo/crawl-csv.ts';
import { openDb, type Db } from '../lib/parquet.ts';
import { main as filterMain } from '../deduplicate/filter.ts';
import { deduplicate } from '../deduplicate/pipeline.ts';
import { main as statsMain } from '../deduplicate/stats.ts';
import type { DatasetStats } from '../deduplicate/statistics.ts';

let root: string;
let parts: string;
let db: Db;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'dedup-stats-'));
  const input = join(root, 'csv');
  for (const f of generateCrawlCsvs({ imageBaseUrl: 'http://127.0.0.1:9/', files: 10, rowsPerFile: 400, seed: 11 })) {
    mkdirSync(dirname(join(input, f.path)), { recursive: true });
    writeFileSync(join(input, f.path), f.content);
  }
  parts = join(root, 'parts');
  await deduplicate({ input, outputFolder: parts, parts: 4, seed: 0, delimiter: '|', memoryLimit: '500MB', threads: 2, requireColumn: 'similarity', fixSwappedDimensions: false });
  db = await openDb();
});

after(() => {
  db.close();
  rmSync(root, { recursive: true, force: true });
});

test('stats: numbers match direct DuckDB queries on the output, plots are real images', async () => {
  const out = join(root, 'stats');
  assert.equal(await statsMain(['--input', parts, '--output-folder', out, '--memory-limit', '500MB']), 0);
  const stats = JSON.parse(readFileSync(join(out, 'stats.json'), 'utf8')) as DatasetStats;
  const src = `'${parts}/part-*.parquet'`;
  const [direct] = await db.all<Record<string, unknown>>(`SELECT count(*) AS rows,
    quantile_disc(WIDTH, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1]) AS w, quantile_disc(HEIGHT, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1]) AS h,
    quantile_disc(similarity, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1]) AS s, quantile_disc(length(TEXT), [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1]) AS l,
    count(*) FILTER (WHERE WIDTH >= 512 AND HEIGHT >= 512) AS both512, count(*) FILTER (WHERE WIDTH >= 1024 OR HEIGHT >= 1024) AS one1024,
    count(*) FILTER (WHERE NSFW = 'UNSURE') AS unsure FROM ${src}`);
  assert.equal(stats.rows, Number(direct!.rows));
  const q = (col: string): number[] => Object.values(stats.quantiles[col]!) as number[];
  assert.deepEqual(q('WIDTH'), direct!.w);
  assert.deepEqual(q('HEIGHT'), direct!.h);
  assert.deepEqual(q('similarity'), direct!.s);
  assert.deepEqual(q('caption_length').map(BigInt), direct!.l);
  assert.equal(stats.resolution.min_side_ge_512, Number(direct!.both512));
  assert.equal(stats.resolution.max_side_ge_1024, Number(direct!.one1024));
  assert.equal(stats.nsfw.UNSURE, Number(direct!.unsure));
  assert.equal(Object.values(stats.license).reduce((a, b) => a + b, 0), stats.rows);
  const histTotal = stats.histograms.WIDTH!.bins.reduce((a, b) => a + b.count, 0);
  assert.equal(histTotal, stats.non_null.WIDTH);

  const md = readFileSync(join(out, 'stats.md'), 'utf8');
  assert.match(md, new RegExp(`\\| WIDTH \\| ${stats.non_null.WIDTH} \\| ${q('WIDTH').join(' \\| ')} \\|`));
  const files = readdirSync(out);
  for (const name of ['hist_width', 'hist_height', 'hist_similarity', 'hist_caption_length', 'resolution_buckets']) {
    assert.ok(files.includes(`${name}.svg`) && files.includes(`${name}.png`), name);
    assert.match(readFileSync(join(out, `${name}.svg`), 'utf8'), /^<svg[^>]*>.*<\/svg>$/s);
    const meta = await sharp(join(out, `${name}.png`)).metadata();
    assert.equal(meta.format, 'png');
    assert.ok(meta.width! > 300 && meta.height! > 200, `${name}.png is ${meta.width}x${meta.height}`);
  }
});

test('filter: keeps exactly the rows the conditions select, same schema, names and order', async () => {
  const out = join(root, 'filtered');
  const code = await filterMain(['--input', parts, '--output-folder', out, '--min-width', '400', '--min-similarity', '0.35', '--nsfw', 'UNLIKELY,UNSURE', '--where', 'length(TEXT) >= 20']);
  assert.equal(code, 0);
  assert.deepEqual(readdirSync(out).filter((n) => n.endsWith('.parquet')).sort(), readdirSync(parts).filter((n) => n.endsWith('.parquet')).sort());
  const cond = `WIDTH >= 400 AND similarity >= 0.35 AND NSFW IN ('UNLIKELY', 'UNSURE') AND length(TEXT) >= 20`;
  const want = await db.all<{ k: string }>(`SELECT parse_filename(filename) || URL || TEXT AS k FROM read_parquet('${parts}/part-*.parquet', filename=true) WHERE ${cond} ORDER BY filename, file_row_number`);
  const got = await db.all<{ k: string }>(`SELECT parse_filename(filename) || URL || TEXT AS k FROM read_parquet('${out}/part-*.parquet', filename=true) ORDER BY filename, file_row_number`);
  assert.ok(want.length > 0 && want.length < (await db.all(`SELECT 1 FROM '${parts}/part-*.parquet'`)).length);
  assert.deepEqual(got, want);
  const schema = async (dir: string): Promise<unknown> => db.all(`DESCRIBE SELECT * FROM '${dir}/part-*.parquet'`);
  assert.deepEqual(await schema(out), await schema(parts));
  const summary = JSON.parse(readFileSync(join(out, '_filter.json'), 'utf8'));
  assert.equal(summary.rows_out, want.length);
});

test('filter: a bad --where is a one-line error naming the expression, exit 2', async () => {
  const { code, stderr: text } = await runCli('deduplicate/filter.ts', ['--input', parts, '--output-folder', join(root, 'bad'), '--where', 'lenght(TEXT) > 3']);
  assert.equal(code, 2);
  assert.doesNotMatch(text, /\n\s+at /, 'no stack trace');
  assert.match(text.trim().split('\n').at(-1)!, /^error: --where "lenght\(TEXT\) > 3" is not a usable SQL boolean expression: .*lenght/);
});
