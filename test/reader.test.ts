import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { openDb, sqlString, type Db } from '../lib/parquet.ts';
import { columnList, listInputFiles, readShards, sampleKey, shardName, type ReaderOptions } from '../download_images/reader.ts';

let dir: string;
let db: Db;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reader-'));
  db = await openDb({ threads: 1 });
});
after(async () => {
  db.close();
  await rm(dir, { recursive: true, force: true });
});

const base = (o: Partial<ReaderOptions>): ReaderOptions => ({
  urlList: '',
  inputFormat: 'csv',
  urlCol: 'url',
  captionCol: null,
  saveAdditionalColumns: [],
  verifyHash: null,
  numberSamplePerShard: 10000,
  tmpDir: join(dir, `tmp-${Math.random().toString(36).slice(2)}`),
  ...o,
});

async function shardRows(path: string): Promise<Record<string, unknown>[]> {
  return db.all(`SELECT * FROM read_parquet(${sqlString(`${path}/*.parquet`)}) ORDER BY __rn`);
}

test('keys and shard names as img2dataset computes them', () => {
  assert.equal(sampleKey(1, 5, 10000, 5), '000010005');
  assert.equal(sampleKey(0, 0, 10000, 5), '000000000');
  // N = 5000 -> 4 sample digits, gaps in the numbering.
  assert.equal(sampleKey(1, 0, 5000, 5), '000010000');
  // N = 1000 -> 3 + 5 = 8 digits; N = 100000 -> 5 + 5 = 10 digits.
  assert.equal(sampleKey(2, 7, 1000, 5), '00002007');
  assert.equal(sampleKey(2, 7, 100000, 5), '0000200007');
  // N = 1 -> the key is the padded shard id.
  assert.equal(sampleKey(42, 0, 1, 5), '00042');
  assert.equal(sampleKey(3, 2, 10, 6), '0000032');
  assert.equal(shardName(7, 5), '00007');
  assert.equal(shardName(123456, 5), '123456');
  assert.equal(shardName(7, 8), '00000007');
});

test('column list order: additional columns, caption, hash, url; txt has url only', () => {
  assert.deepEqual(columnList({ inputFormat: 'parquet', captionCol: 'TEXT', saveAdditionalColumns: ['NSFW', 'similarity'], verifyHash: { column: 'h', hash: 'md5' } }), [
    'NSFW', 'similarity', 'caption', 'md5', 'url',
  ]);
  assert.deepEqual(columnList({ inputFormat: 'txt.gz', captionCol: 'TEXT', saveAdditionalColumns: ['x'], verifyHash: null }), ['url']);
});

test('a folder of csv files: sorted, shards never span files, ids run on, renamed columns keep their types', async () => {
  const folder = join(dir, 'csvs');
  await mkdir(folder);
  const csv = (from: number, n: number): string =>
    'URL,TEXT,similarity,n\n' + Array.from({ length: n }, (_, i) => `http://h/${from + i}.jpg,"cap, ""${from + i}""",0.${i + 1},${from + i}`).join('\n') + '\n';
  await writeFile(join(folder, 'b.csv'), csv(100, 5));
  await writeFile(join(folder, 'a.csv'), csv(0, 7));
  await writeFile(join(folder, 'ignored.txt'), 'http://x\n');
  assert.deepEqual((await listInputFiles(folder, 'csv')).map((p) => p.slice(folder.length + 1)), ['a.csv', 'b.csv']);
  const o = base({ urlList: folder, urlCol: 'URL', captionCol: 'TEXT', saveAdditionalColumns: ['similarity', 'n'], numberSamplePerShard: 3 });
  const shards = [];
  for await (const s of readShards(db, o)) shards.push({ ...s, data: await shardRows(s.path) });
  // a.csv: 7 rows -> shards 0,1,2 (3,3,1); b.csv: 5 rows -> shards 3,4 (3,2).
  assert.deepEqual(shards.map((s) => [s.shardId, s.rows, s.data.length]), [[0, 3, 3], [1, 3, 3], [2, 1, 1], [3, 3, 3], [4, 2, 2]]);
  assert.deepEqual(shards[3]!.data.map((r) => r.url), ['http://h/100.jpg', 'http://h/101.jpg', 'http://h/102.jpg']);
  assert.deepEqual(Object.keys(shards[0]!.data[0]!), ['similarity', 'n', 'caption', 'url', '__rn']);
  assert.equal(shards[0]!.data[1]!.caption, 'cap, "1"');
  assert.equal(typeof shards[0]!.data[0]!.similarity, 'number');
  assert.equal(shards[4]!.data[1]!.__rn, 4n);
});

test('done shards are counted but not yielded; extend starts after the last id', async () => {
  const file = join(dir, 'ten.csv');
  await writeFile(file, 'url\n' + Array.from({ length: 10 }, (_, i) => `http://h/${i}`).join('\n') + '\n');
  const ids = [];
  for await (const s of readShards(db, base({ urlList: file, numberSamplePerShard: 4, doneShards: new Set([0, 2]) }))) ids.push(s.shardId);
  assert.deepEqual(ids, [1]);
  const ext = [];
  for await (const s of readShards(db, base({ urlList: file, numberSamplePerShard: 4, startShardId: 9 }))) ext.push(s.shardId);
  assert.deepEqual(ext, [9, 10, 11]);
});

test('every input format: txt (+gz, commas kept, blank lines skipped), tsv, json, jsonl, parquet, csv.gz', async () => {
  const f = join(dir, 'formats');
  await mkdir(f);
  const txt = 'http://h/a,b.jpg\n\nhttp://h/2.jpg\n';
  await writeFile(join(f, 'l.txt'), txt);
  await writeFile(join(f, 'l.txt.gz'), gzipSync(txt));
  await writeFile(join(f, 'l.tsv'), 'url\tcaption\nhttp://h/1\tone, two\nhttp://h/2\tthree\n');
  await writeFile(join(f, 'l.json'), JSON.stringify([{ url: 'http://h/1', caption: 'c1' }, { url: 'http://h/2', caption: null }]));
  await writeFile(join(f, 'l.jsonl'), '{"url":"http://h/1","caption":"c1"}\n{"url":"http://h/2","caption":"c2"}\n');
  await writeFile(join(f, 'l.jsonl.gz'), gzipSync('{"url":"http://h/1","caption":"c1"}\n'));
  await writeFile(join(f, 'l.csv.gz'), gzipSync('url,caption\nhttp://h/1,x\n'));
  await db.run(`COPY (SELECT 'http://h/' || i AS URL, 'cap ' || i AS TEXT, i * 1.5 AS score, 'unused' AS other FROM range(5) t(i)) TO ${sqlString(join(f, 'l.parquet'))} (FORMAT parquet)`);
  const urls = async (file: string, o: Partial<ReaderOptions>): Promise<unknown[][]> => {
    const out: unknown[][] = [];
    for await (const s of readShards(db, base({ urlList: join(f, file), ...o }))) for (const r of await shardRows(s.path)) out.push(Object.values(r).slice(0, -1));
    return out;
  };
  assert.deepEqual(await urls('l.txt', { inputFormat: 'txt' }), [['http://h/a,b.jpg'], ['http://h/2.jpg']]);
  assert.deepEqual(await urls('l.txt.gz', { inputFormat: 'txt.gz', captionCol: 'caption' }), [['http://h/a,b.jpg'], ['http://h/2.jpg']]);
  assert.deepEqual(await urls('l.tsv', { inputFormat: 'tsv', captionCol: 'caption' }), [['one, two', 'http://h/1'], ['three', 'http://h/2']]);
  assert.deepEqual(await urls('l.json', { inputFormat: 'json', captionCol: 'caption' }), [['c1', 'http://h/1'], [null, 'http://h/2']]);
  assert.deepEqual(await urls('l.jsonl', { inputFormat: 'jsonl', captionCol: 'caption' }), [['c1', 'http://h/1'], ['c2', 'http://h/2']]);
  assert.deepEqual(await urls('l.jsonl.gz', { inputFormat: 'jsonl.gz' }), [['http://h/1']]);
  assert.deepEqual(await urls('l.csv.gz', { inputFormat: 'csv.gz', captionCol: 'caption' }), [['x', 'http://h/1']]);
  assert.deepEqual(await urls('l.parquet', { inputFormat: 'parquet', urlCol: 'URL', captionCol: 'TEXT', saveAdditionalColumns: ['score'], numberSamplePerShard: 2 }), [
    [0, 'cap 0', 'http://h/0'], [1.5, 'cap 1', 'http://h/1'], [3, 'cap 2', 'http://h/2'], [4.5, 'cap 3', 'http://h/3'], [6, 'cap 4', 'http://h/4'],
  ]);
  await assert.rejects(urls('l.parquet', { inputFormat: 'parquet', urlCol: 'nope' }), /column\(s\) nope not found/);
  await assert.rejects(listInputFiles(join(dir, 'missing'), 'csv'), /No file found at path/);
});

test('the shard parts of a 200k-row file are written without holding the file (streamed by DuckDB)', async () => {
  const file = join(dir, 'big.parquet');
  await db.run(`COPY (SELECT 'http://h/' || i AS url FROM range(200000) t(i)) TO ${sqlString(file)} (FORMAT parquet)`);
  const o = base({ urlList: file, inputFormat: 'parquet', numberSamplePerShard: 10000 });
  let n = 0;
  let last = '';
  for await (const s of readShards(db, o)) {
    n++;
    if (s.shardId === 13) {
      const rows = await shardRows(s.path);
      assert.equal(rows.length, 10000);
      assert.equal(rows[0]!.url, 'http://h/130000');
      last = rows[9999]!.url as string;
    }
  }
  assert.equal(n, 20);
  assert.equal(last, 'http://h/139999');
  assert.equal((await readdir(o.tmpDir)).length, 20);
});
