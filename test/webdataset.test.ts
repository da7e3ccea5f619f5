import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { readTarEntries, readTarSamples, splitMemberName } from '../lib/webdataset/tar-reader.ts';
import { pythonFloatRepr, TarWriter } from '../lib/webdataset/tar-writer.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wds-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeTar(path: string, samples: Array<{ key: string; members: Record<string, Uint8Array | string> }>): Promise<void> {
  const w = new TarWriter(createWriteStream(path));
  for (const s of samples) await w.writeSample(s);
  await w.end();
}

const field = (buf: Buffer, off: number, len: number): string => buf.subarray(off, off + len).toString('latin1');

test('tar bytes follow webdataset + CPython tarfile: PAX mtime header, ustar fields, 10240-byte records', async () => {
  const path = join(dir, 'a.tar');
  await writeTar(path, [{ key: '000010005', members: { txt: 'a caption', jpg: Buffer.from([0xff, 0xd8, 1, 2, 3]), json: '{}' } }]);
  const tar = await readFile(path);
  assert.equal(tar.length % 10240, 0);
  // Block 0: the PAX header for the first member (sorted suffixes: jpg, json, txt).
  assert.equal(field(tar, 0, 15), '././@PaxHeader\0');
  assert.equal(field(tar, 156, 1), 'x');
  const paxSize = parseInt(field(tar, 124, 11), 8);
  const record = field(tar, 512, paxSize);
  const m = /^(\d+) mtime=(\d+\.\d+)\n$/.exec(record);
  assert.ok(m, record);
  assert.equal(Number(m[1]), record.length);
  // Block 2: the member's ustar header.
  const h = tar.subarray(1024, 1536);
  assert.equal(field(h, 0, 14), '000010005.jpg\0');
  assert.equal(field(h, 100, 8), '0000444\0');
  assert.equal(field(h, 108, 8), '0000000\0');
  assert.equal(field(h, 124, 12), '00000000005\0');
  assert.equal(parseInt(field(h, 136, 11), 8), Math.round(Number(m[2])));
  assert.equal(field(h, 156, 1), '0');
  assert.equal(field(h, 257, 8), 'ustar\u000000');
  assert.equal(field(h, 265, 8), 'bigdata\0');
  assert.equal(field(h, 297, 8), 'bigdata\0');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  assert.equal(field(h, 148, 8), `${sum.toString(8).padStart(6, '0')}\0 `);
  const entries = [];
  for await (const e of readTarEntries(path)) entries.push(e);
  assert.deepEqual(entries.map((e) => e.name), ['000010005.jpg', '000010005.json', '000010005.txt']);
  assert.equal(entries[0]!.mode, 0o444);
  assert.equal(entries[0]!.uname, 'bigdata');
  assert.equal(entries[2]!.data.toString(), 'a caption');
});

test('members of a sample are adjacent, in sorted suffix order, and grouped back by key', async () => {
  const path = join(dir, 'b.tar');
  await writeTar(path, [
    { key: '2', members: { png: Buffer.from('P'), txt: 'x', json: '{"a": 1}' } },
    { key: '1', members: { webp: Buffer.from('W'), json: '{}' } },
  ]);
  const names = [];
  for await (const e of readTarEntries(path)) names.push(e.name);
  assert.deepEqual(names, ['2.json', '2.png', '2.txt', '1.json', '1.webp']);
  const samples = [];
  for await (const s of readTarSamples(path)) samples.push(s);
  assert.deepEqual(samples.map((s) => [s.key, [...s.members.keys()]]), [
    ['2', ['json', 'png', 'txt']],
    ['1', ['json', 'webp']],
  ]);
  assert.equal(samples[0]!.members.get('json')!.toString(), '{"a": 1}');
});

test('keys with a dot are refused; names split at the first dot of the basename', async () => {
  const w = new TarWriter(createWriteStream(join(dir, 'c.tar')));
  await assert.rejects(w.writeSample({ key: 'a.b', members: { jpg: Buffer.from('x') } }), /cannot contain/);
  await w.end();
  assert.deepEqual(splitMemberName('dir/000010005.jpg'), ['dir/000010005', 'jpg']);
  assert.deepEqual(splitMemberName('a.b.JPG'), ['a', 'b.jpg']);
  assert.equal(splitMemberName('nodot'), null);
  assert.equal(splitMemberName('__meta__.json'), null);
});

test('python float repr', () => {
  assert.equal(pythonFloatRepr(1700000000.0237617), '1700000000.0237617');
  assert.equal(pythonFloatRepr(1), '1.0');
  assert.equal(pythonFloatRepr(1e-5), '1e-05');
  assert.equal(pythonFloatRepr(1e16), '1e+16');
  assert.equal(pythonFloatRepr(0.1 + 0.2), '0.30000000000000004');
});

test('CPython tarfile reads the tar in stream mode (skipped without python3)', async (t) => {
  const probe = spawnSync('python3', ['-c', 'import tarfile'], { encoding: 'utf8' });
  if (probe.status !== 0) return t.skip('python3 not available');
  const path = join(dir, 'py.tar');
  await writeTar(path, [
    { key: '000000000', members: { jpg: Buffer.from('abc'), json: '{"k": "\\u00e9"}', txt: 'é' } },
    { key: '000000001', members: { jpg: Buffer.alloc(700, 1), json: '{}', txt: '' } },
  ]);
  const script = `
import tarfile, sys
t = tarfile.open(sys.argv[1], 'r|*')
for m in t:
    d = t.extractfile(m).read()
    print(m.name, m.size, oct(m.mode), m.uname, m.gname, 'mtime' in m.pax_headers, len(d))
`;
  const r = spawnSync('python3', ['-c', script, path], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), [
    '000000000.jpg 3 0o444 bigdata bigdata True 3',
    '000000000.json 15 0o444 bigdata bigdata True 15',
    '000000000.txt 2 0o444 bigdata bigdata True 2',
    '000000001.jpg 700 0o444 bigdata bigdata True 700',
    '000000001.json 2 0o444 bigdata bigdata True 2',
    '000000001.txt 0 0o444 bigdata bigdata True 0',
  ]);
});
