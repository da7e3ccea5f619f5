// Metadata by id for the back end: the row file and DuckDB over the parquet files give the same
// rows for the same ids (id = row in sorted file order), the row file is rebuilt when a parquet file
// changes and reused otherwise, and ids outside the data are simply absent.
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { MetadataStore, openMetadata, RowFileStore } from '../embeddings-indices-hosting/back/metadata-store.ts';
import { openDb, sqlString } from '../lib/parquet.ts';

let dir: string;

async function writeParts(folder: string, sizes: number[], tag: string): Promise<void> {
  await mkdir(join(folder, 'metadata', 'sub'), { recursive: true });
  const db = await openDb();
  try {
    let start = 0;
    for (const [i, n] of sizes.entries()) {
      // Names sort as 0, 1, sub/2: ids follow that order.
      const path = i < 2 ? join(folder, 'metadata', `metadata_${i}.parquet`) : join(folder, 'metadata', 'sub', `metadata_${i}.parquet`);
      await db.run(
        `COPY (SELECT ${start} + i AS n, '${tag} ' || (${start} + i) || ' é "q"' AS caption, 'http://x/' || (${start} + i) AS url, ` +
          `CASE WHEN i % 3 = 0 THEN NULL ELSE (i * 0.5)::DOUBLE END AS score, i % 2 = 0 AS flag, (${start} + i)::BIGINT * 1000000000 AS big ` +
          `FROM range(${n}) t(i)) TO ${sqlString(path)} (FORMAT parquet, ROW_GROUP_SIZE 1000)`,
      );
      start += n;
    }
  } finally {
    db.close();
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'back-meta-'));
  await writeParts(dir, [2500, 10, 1200], 'caption');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('row file and DuckDB give the same rows by id; ids are rows in sorted file order', async () => {
  const logs: string[] = [];
  const rows = await openMetadata(dir, { rowFile: true, log: (m) => logs.push(m) });
  const duck = await MetadataStore.open(join(dir, 'metadata'));
  try {
    assert.ok(rows instanceof RowFileStore);
    assert.ok(existsSync(join(dir, 'metadata-rows', 'rows.bin')));
    assert.equal(rows.rowCount, 3710);
    assert.deepEqual(rows.columns, ['n', 'caption', 'url', 'score', 'flag', 'big']);
    const ids = [0, 1, 2, 999, 1000, 2499, 2500, 2509, 2510, 3709, 3710, -1, 1.5, 123456];
    const cols = ['caption', 'n', 'score', 'flag', 'big', 'missing'];
    const a = await rows.get(ids, cols);
    const b = await duck.get(ids, cols);
    assert.deepEqual([...a.keys()].sort((x, y) => x - y), [0, 1, 2, 999, 1000, 2499, 2500, 2509, 2510, 3709]);
    for (const id of a.keys()) {
      assert.deepEqual(a.get(id), b.get(id), `id ${id}`);
      assert.equal(a.get(id)!.n, id);
      assert.equal(a.get(id)!.caption, `caption ${id} é "q"`);
      assert.deepEqual(Object.keys(a.get(id)!), ['caption', 'n', 'score', 'flag', 'big']);
    }
    assert.equal(a.get(0)!.score, null);
    assert.equal(a.get(1)!.score, 0.5);
    assert.equal(a.get(3709)!.big, 3709 * 1e9);
  } finally {
    await rows.close();
    duck.close();
  }
  // Reused as long as the parquet files are the same...
  const mtime = statSync(join(dir, 'metadata-rows', 'rows.bin')).mtimeMs;
  const again = await openMetadata(dir, { rowFile: true, log: (m) => logs.push(m) });
  await again.close();
  assert.equal(statSync(join(dir, 'metadata-rows', 'rows.bin')).mtimeMs, mtime);
  assert.equal(logs.filter((l) => /writing the metadata row file/.test(l)).length, 1);
  // ...and rebuilt when one changes.
  await writeParts(dir, [2500, 10, 1200], 'changed');
  const changed = await openMetadata(dir, { rowFile: true, log: (m) => logs.push(m) });
  try {
    assert.equal((await changed.get([2505], ['caption'])).get(2505)!.caption, 'changed 2505 é "q"');
  } finally {
    await changed.close();
  }
  assert.equal(logs.filter((l) => /writing the metadata row file/.test(l)).length, 2);
});

test('without the row file: DuckDB over the parquet files', async () => {
  const duck = await openMetadata(dir, { rowFile: false, log: () => {} });
  try {
    assert.ok(duck instanceof MetadataStore);
    assert.equal((await duck.get([2510], ['url'])).get(2510)!.url, 'http://x/2510');
  } finally {
    await duck.close();
  }
});

test('an image_path that is a local image file adds `image` (base64 JPEG), as clip-retrieval does', async () => {
  const { metadataFor } = await import('../embeddings-indices-hosting/back/knn.ts');
  const sharp = (await import('sharp')).default;
  const { writeFile } = await import('node:fs/promises');
  const folder = join(dir, 'with-images');
  await mkdir(join(folder, 'metadata'), { recursive: true });
  const png = join(folder, 'a.png');
  await writeFile(png, await sharp({ create: { width: 8, height: 6, channels: 3, background: { r: 255, g: 0, b: 0 } } }).png().toBuffer());
  await writeFile(join(folder, 'not-an-image.png'), 'text');
  const db = await openDb();
  try {
    await db.run(
      `COPY (SELECT * FROM (VALUES (${sqlString(png)}, 'red'), ('relative/key', 'no file'), (${sqlString(join(folder, 'missing.jpg'))}, 'missing'), (${sqlString(join(folder, 'not-an-image.png'))}, 'broken')) t(image_path, caption)) ` +
        `TO ${sqlString(join(folder, 'metadata', 'm.parquet'))} (FORMAT parquet)`,
    );
  } finally {
    db.close();
  }
  const store = await openMetadata(folder, { rowFile: true, log: () => {} });
  try {
    const rows = await metadataFor(store, [0, 1, 2, 3], ['image_path', 'caption']);
    const image = (rows.get(0) as { image?: string }).image!;
    const meta = await sharp(Buffer.from(image, 'base64')).metadata();
    assert.equal(meta.format, 'jpeg');
    assert.equal(meta.width, 8);
    for (const id of [1, 2, 3]) assert.equal('image' in rows.get(id)!, false, `id ${id}`);
  } finally {
    await store.close();
  }
});
