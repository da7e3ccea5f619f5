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
    const empty = await readHeader({ path: join(dir, 'empty.csv'), bytes: 0, gzip: false }, '|');
    assert.equal('skip' in empty && empty.skip, 'empty file');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Spark's non-ANSI casts written independently of the SQL under test (surrounding whitespace is
// only Spark's set, not JS trim()'s); the fast paths of the macros must agree with them everywhere.
const SPARK_SPACE = /^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$/g;

function sparkIntegral(v: string | null, bits: 32n | 64n): bigint | null {
  if (v === null) return null;
  const t = v.replace(SPARK_SPACE, '');
  const m = /^([+-]?)0*([0-9]*)(\.[0-9]*)?$/.exec(t);
  if (!m || /^[+-]?$/.test(t)) return null;
  const n = m[2] === '' ? 0n : BigInt(`${m[1]}${m[2]}`);
  const max = (1n << (bits - 1n)) - 1n;
  return n > max || n < -max - 1n ? null : n;
}

function sparkDouble(v: string | null): number | null {
  if (v === null) return null;
  const t = v.replace(SPARK_SPACE, '');
  const special = /^([+-]?)(inf|infinity|nan)$/i.exec(t);
  if (special) return /nan/i.test(special[2]!) ? NaN : special[1] === '-' ? -Infinity : Infinity;
  if (!/^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[dDfF]?$/.test(t)) return null;
  return Number(t.replace(/[dDfF]$/, ''));
}

test('casts: fast paths agree with an independent Spark cast on generated values', async () => {
  const pieces = ['0', '1', '7', '9', '00', '.', '.', '-', '+', ' ', '\t', '\n', '\u00a0', 'e', 'E', '3', 'x', '_', 'd', 'f', 'inf', 'nan', 'Infinity', 'a', '999999999', '2147483648', '9223372036854775808'];
  let seed = 99;
  const next = (k: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) | 0;
    return (seed >>> 8) % k;
  };
  const values = new Set<string>(['-0', '0.30000000', '0.3481885', '480.0', '-2147483648', '2147483647', '-9223372036854775808', '9223372036854775807', '1e3', ' 1E+2d ', '-.5', '5.', '+7']);
  for (let i = 0; i < 20_000; i++) {
    let s = '';
    for (let n = next(6); n > 0; n--) s += pieces[next(pieces.length)];
    values.add(s);
  }
  for (let i = -300; i < 300; i++) for (const s of [String(i), `${i}.0`, String(i / 7), (i / 13).toFixed(8), String(i * 1e7)]) values.add(s);
  const list = [...values];
  const db = await openDb();
  try {
    await db.run(CAST_MACROS_SQL);
    await db.run('CREATE TABLE v (i INTEGER, s VARCHAR)');
    const appender = await db.connection.createAppender('v');
    list.forEach((s, i) => {
      appender.appendInteger(i);
      appender.appendVarchar(s);
      appender.endRow();
    });
    appender.appendInteger(list.length);
    appender.appendNull();
    appender.endRow();
    appender.closeSync();
    const rows = await db.all<{ i: number; s: string | null; a: number | null; b: bigint | null; d: number | null; fa: boolean; fb: boolean; fd: boolean }>(
      `SELECT i, s, spark_int(s) AS a, spark_bigint(s) AS b, spark_double(s) AS d,
        cast_failed(s, spark_int(s)) AS fa, cast_failed(s, spark_bigint(s)) AS fb, cast_failed(s, spark_double(s)) AS fd FROM v ORDER BY i`,
    );
    assert.equal(rows.length, list.length + 1);
    for (const r of rows) {
      const present = r.s !== null && r.s.replace(SPARK_SPACE, '') !== '';
      const int = sparkIntegral(r.s, 32n);
      const big = sparkIntegral(r.s, 64n);
      const dbl = sparkDouble(r.s);
      assert.equal(r.a, int === null ? null : Number(int), `spark_int(${JSON.stringify(r.s)})`);
      assert.equal(r.b, big, `spark_bigint(${JSON.stringify(r.s)})`);
      assert.equal(r.d, dbl, `spark_double(${JSON.stringify(r.s)})`);
      assert.equal(r.fa, present && int === null, `cast_failed int ${JSON.stringify(r.s)}`);
      assert.equal(r.fb, present && big === null, `cast_failed bigint ${JSON.stringify(r.s)}`);
      assert.equal(r.fd, present && dbl === null, `cast_failed double ${JSON.stringify(r.s)}`);
    }
  } finally {
    db.close();
  }
});
