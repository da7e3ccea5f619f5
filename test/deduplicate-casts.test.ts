// The Spark-compatible casts and the CSV helpers of stage 2, value by value.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { openDb, sqlString } from '../lib/parquet.ts';
import { lineNumbersAt, readHeader, splitCsvLine } from '../deduplicate/csv-sources.ts';
import { CAST_MACROS_SQL } from '../deduplicate/schema.ts';

test('casts: integers truncate like Spark, garbage and overflow become null, blanks are not failures', async () => {
  const db = await openDb();
  try {
    await db.run(CAST_MACROS_SQL);
    // value -> [int, failed]
    const cases: [string | null, number | null, boolean][] = [
      ['12', 12, false], ['12.7', 12, false], [' 12 ', 12, false], ['480.0', 480, false], ['-3.9', -3, false],
      ['+5', 5, false], ['.5', 0, false], ['007', 7, false], ['12.', 12, false], ['', null, false], ['   ', null, false],
      [null, null, false], ['n/a', null, true], ['1e3', null, true], ['0x10', null, true], ['1_000', null, true],
      ['2147483647', 2147483647, false], ['2147483648', null, true], ['-', null, true], ['1.2.3', null, true],
    ];
    for (const [v, want, failed] of cases) {
      const lit = v === null ? 'NULL' : sqlString(v);
      const [r] = await db.all<{ i: number | null; f: boolean }>(`SELECT spark_int(${lit}) AS i, cast_failed(${lit}, spark_int(${lit})) AS f`);
      assert.equal(r!.i, want, `spark_int(${JSON.stringify(v)})`);
      assert.equal(r!.f, failed, `cast_failed(${JSON.stringify(v)})`);
    }
    const [b] = await db.all<{ b: bigint; d: number; e: number | null; x: number | null }>(
      `SELECT spark_bigint('41826002453.0') AS b, spark_double(' 1e3 ') AS d, spark_double('abc') AS e, spark_double('0.3481885') AS x`,
    );
    assert.deepEqual(b, { b: 41826002453n, d: 1000, e: null, x: 0.3481885 });
  } finally {
    db.close();
  }
});

test('csv helpers: pandas header split, gz header, physical line numbers of byte offsets', async () => {
  assert.deepEqual(splitCsvLine('a|"b|c"|"d ""q"""|', '|'), ['a', 'b|c', 'd "q"', '']);
  const dir = mkdtempSync(join(tmpdir(), 'dedup-csv-'));
  try {
    const text = 'SAMPLE_ID|TEXT|similarity\n1|"two\nlines"|0.3\n2|x|0.4\n';
    const path = join(dir, 'a.csv.gz');
    writeFileSync(path, gzipSync(Buffer.from(text)));
    const src = { path, bytes: 0, gzip: true };
    assert.deepEqual(await readHeader(src, '|'), { columns: ['SAMPLE_ID', 'TEXT', 'similarity'] });
    const lines = await lineNumbersAt(src, [BigInt(text.indexOf('2|x')), 0n]);
    assert.equal(lines.get(BigInt(text.indexOf('2|x'))), 4);
    assert.equal(lines.get(0n), 1);
    writeFileSync(join(dir, 'empty.csv'), '');
    assert.deepEqual(await readHeader({ path: join(dir, 'empty.csv'), bytes: 0, gzip: false }, '|'), { skip: 'empty file' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
