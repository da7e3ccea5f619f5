import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { openDb, sqlString } from '../lib/parquet.ts';
import { runCli } from './helpers/cli-process.ts';

test('npm run demo -- --no-serve: every stage runs on the synthetic crawl and chains through files', async () => {
  const root = await mkdtemp(join(tmpdir(), 'demo-'));
  const out = join(root, 'out');
  try {
    const r = await runCli('demo/run.ts', ['--no-serve', '--files', '5', '--rows', '40', '--output-folder', out]);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    // Stage 1: every CSV complete.
    const manifest = readFileSync(join(out, 'csv', '_manifest.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { status: string });
    assert.equal(manifest.length, 5);
    assert.ok(manifest.every((m) => m.status === 'downloaded'));
    // Stage 2: parts, summary, stats.
    assert.ok(existsSync(join(out, 'dedup', '_SUCCESS')));
    const summary = JSON.parse(readFileSync(join(out, 'dedup', '_summary.json'), 'utf8')) as { rows_unique: number };
    assert.ok(existsSync(join(out, 'stats', 'stats.json')));
    // Stage 3: one parquet row per unique input row, most of them images in the tars.
    const db = await openDb();
    try {
      const [row] = await db.all<{ n: bigint; ok: bigint }>(
        `SELECT count(*) AS n, count(*) FILTER (WHERE status = 'success') AS ok FROM read_parquet(${sqlString(join(out, 'images', '*.parquet'))})`,
      );
      assert.equal(Number(row!.n), summary.rows_unique);
      assert.ok(Number(row!.ok) > 0.8 * summary.rows_unique, `only ${row!.ok} of ${row!.n} succeeded`);
    } finally {
      db.close();
    }
    assert.ok(readdirSync(join(out, 'images')).some((f) => f.endsWith('.tar')));
    assert.match(r.stderr, /demo pipeline done/);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
