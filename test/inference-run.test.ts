// `run.ts inference` end to end on coloured-shape images with the tiny generated CLIP model: the
// outputs are read back (npy headers and shapes, unit rows, metadata rows and types), row k of the
// three files is checked to be sample k through the model's known colour mapping and a direct model
// run, the three input formats must agree, and a kill -9 mid-run then a rerun must give the same bytes.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { writeTinyClip } from '../demo/tiny-clip.ts';
import { locateModelFiles, normalizeRows, openTextTower } from '../embeddings-indices-hosting/inference/clip-model.ts';
import { ClipTokenizer } from '../embeddings-indices-hosting/inference/tokenizer.ts';
import { main } from '../embeddings-indices-hosting/inference/cli.ts';
import { readNpy, readNpyHeader } from '../lib/npy.ts';
import { openDb, sqlString, writeParquetRows } from '../lib/parquet.ts';
import { runCli, startCli } from './helpers/cli-process.ts';
import { COLOURS, shapeItems, wdsMembers, writeTar, type ShapeItem } from './helpers/shape-samples.ts';

let dir: string;
let model: string;
let items: ShapeItem[];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'inference-run-'));
  model = writeTinyClip(join(dir, 'model'));
  items = await shapeItems();
  // webdataset: two tars (half each) plus a corrupt image and a sample without caption in the second.
  const wds = join(dir, 'wds');
  await mkdir(wds);
  await writeTar(join(wds, '00000.tar'), items.slice(0, 6).map((it) => ({ key: it.key, members: wdsMembers(it) })));
  await writeTar(join(wds, '00001.tar'), [
    ...items.slice(6, 9).map((it) => ({ key: it.key, members: wdsMembers(it) })),
    { key: '000000100', members: { jpg: Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]), txt: 'a broken picture', json: '{"key": "000000100"}' } },
    { key: '000000101', members: { jpg: items[0]!.jpg, json: '{"key": "000000101"}' } },
    ...items.slice(9).map((it) => ({ key: it.key, members: wdsMembers(it) })),
  ]);
  // files: img2dataset's layout, one folder per shard.
  for (const [i, it] of items.entries()) {
    const shard = join(dir, 'files', String(Math.floor(i / 6)).padStart(5, '0'));
    await mkdir(shard, { recursive: true });
    await writeFile(join(shard, `${it.key}.jpg`), it.jpg);
    await writeFile(join(shard, `${it.key}.txt`), it.caption);
    await writeFile(join(shard, `${it.key}.json`), JSON.stringify(it.json));
  }
  // parquet: download_images --output_format parquet (input columns, results, image bytes in jpg).
  await mkdir(join(dir, 'parquet'));
  const db = await openDb();
  try {
    await writeParquetRows(
      db,
      join(dir, 'parquet', '00000.parquet'),
      [
        { name: 'url', type: 'VARCHAR' }, { name: 'caption', type: 'VARCHAR' }, { name: 'key', type: 'VARCHAR' }, { name: 'status', type: 'VARCHAR' },
        { name: 'width', type: 'INTEGER' }, { name: 'height', type: 'INTEGER' }, { name: 'jpg', type: 'BLOB' },
      ],
      [
        ...items.map((it) => [it.json.url, it.caption, it.key, 'success', it.json.width, it.json.height, it.jpg]),
        ['http://example.com/failed.jpg', 'never downloaded', '000000200', 'failed_to_download', null, null, null],
      ],
    );
  } finally {
    db.close();
  }
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function metadataRows(path: string): Promise<Record<string, unknown>[]> {
  const db = await openDb();
  try {
    return await db.all(`SELECT * FROM read_parquet(${sqlString(path)})`);
  } finally {
    db.close();
  }
}

async function metadataTypes(path: string): Promise<Record<string, string>> {
  const db = await openDb();
  try {
    const rows = await db.all<{ column_name: string; column_type: string }>(`DESCRIBE SELECT * FROM read_parquet(${sqlString(path)})`);
    return Object.fromEntries(rows.map((r) => [r.column_name, r.column_type]));
  } finally {
    db.close();
  }
}

function silence<T>(fn: () => Promise<T>): Promise<T> {
  const write = process.stderr.write.bind(process.stderr);
  let captured = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    captured += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  return fn().finally(() => {
    process.stderr.write = write;
    lastStderr = captured;
  });
}
let lastStderr = '';

const cos = (a: Float32Array, b: Float32Array): number => a.reduce((s, v, i) => s + v * b[i]!, 0);
const row = (m: { cols: number; data: Float32Array }, k: number): Float32Array => m.data.subarray(k * m.cols, (k + 1) * m.cols);

test('webdataset brace pattern: two partitions in clip-retrieval\'s layout, rows aligned, bad samples reported and left out', async () => {
  const out = join(dir, 'out-wds');
  const code = await silence(() =>
    main(['--input_dataset', join(dir, 'wds', '{00000..00001}.tar'), '--input_format', 'webdataset', '--output_folder', out, '--clip_model', model,
      '--enable_metadata', 'True', '--wds_number_file_per_input_file', '6', '--write_batch_size', '6', '--batch_size', '4']),
  );
  assert.equal(code, 0, lastStderr);
  assert.match(lastStderr, /execution provider: cpu/);
  assert.match(lastStderr, /skipped .*00001\.tar: 000000100: image does not decode/);
  assert.match(lastStderr, /skipped .*00001\.tar: 000000101: no \.txt member/);
  assert.match(lastStderr, /done: 12 samples embedded in 2 partition\(s\).*2 skipped/);
  assert.deepEqual(readdirSync(join(out, 'img_emb')).sort(), ['img_emb_0.npy', 'img_emb_1.npy']);

  const tok = ClipTokenizer.fromModelFiles(locateModelFiles(model, { image: false, text: true }));
  const textTower = await openTextTower(join(model, 'onnx', 'text_model.onnx'), { device: 'cpu', intraOpThreads: 1 });
  const colourTexts = new Map<string, Float32Array>();
  for (const c of COLOURS) {
    const t = tok.encodeBatch([`a ${c} picture`]);
    colourTexts.set(c, normalizeRows(new Float32Array(await textTower.run(t.ids, t.mask, 1)), 1, textTower.dim));
  }

  const seen: string[] = [];
  for (const p of ['0', '1']) {
    const header = await readNpyHeader(join(out, 'img_emb', `img_emb_${p}.npy`));
    assert.equal(header.dtype, 'float16');
    const img = await readNpy(join(out, 'img_emb', `img_emb_${p}.npy`));
    const txt = await readNpy(join(out, 'text_emb', `text_emb_${p}.npy`));
    const meta = await metadataRows(join(out, 'metadata', `metadata_${p}.parquet`));
    assert.equal(img.rows, meta.length);
    assert.equal(txt.rows, meta.length);
    assert.equal(meta.length, 6);
    const types = await metadataTypes(join(out, 'metadata', `metadata_${p}.parquet`));
    assert.deepEqual(Object.keys(types), ['image_path', 'caption', 'url', 'key', 'status', 'width', 'height', 'score']);
    assert.equal(types.width, 'BIGINT');
    assert.equal(types.score, 'DOUBLE');
    for (let k = 0; k < meta.length; k++) {
      const m = meta[k]!;
      const it = items.find((i) => i.key === m.image_path)!;
      assert.ok(it, String(m.image_path));
      seen.push(it.key);
      assert.equal(m.caption, it.caption);
      assert.equal(m.url, it.json.url);
      for (const e of [img, txt]) assert.ok(Math.abs(Math.hypot(...row(e, k)) - 1) < 2e-3, 'rows are unit length');
      // Row k of text_emb is this caption: the model run directly on it gives the same vector.
      const t = tok.encodeBatch([it.caption]);
      const direct = normalizeRows(new Float32Array(await textTower.run(t.ids, t.mask, 1)), 1, textTower.dim);
      // (float16 storage: within half a float16 step of values below 1)
      assert.ok(direct.every((v, j) => Math.abs(v - row(txt, k)[j]!) < 5e-4), `text row ${k} of partition ${p} (${it.caption})`);
      // Row k of img_emb is this image: the tiny model puts it nearest its own colour's caption.
      const best = [...colourTexts].sort((a, b) => cos(row(img, k), b[1]) - cos(row(img, k), a[1]))[0]![0];
      assert.equal(best, it.colour, `image row ${k} of partition ${p} (${it.caption})`);
    }
  }
  assert.deepEqual(seen.sort(), items.map((i) => i.key).sort());
});

test('files and parquet inputs give the same embeddings as webdataset for the same samples', async () => {
  const embed = async (name: string, format: string, input: string): Promise<Map<string, { img: Float32Array; txt: Float32Array }>> => {
    const out = join(dir, `out-${name}`);
    const code = await silence(() => main(['--input-dataset', input, '--input-format', format, '--output-folder', out, '--clip-model', model, '--enable-metadata', 'True']));
    assert.equal(code, 0, lastStderr);
    const img = await readNpy(join(out, 'img_emb', 'img_emb_0.npy'));
    const txt = await readNpy(join(out, 'text_emb', 'text_emb_0.npy'));
    const meta = await metadataRows(join(out, 'metadata', 'metadata_0.parquet'));
    return new Map(meta.map((m, k) => [String(m.key), { img: row(img, k), txt: row(txt, k) }]));
  };
  const wds = await embed('wds1', 'webdataset', join(dir, 'wds'));
  const files = await embed('files', 'files', join(dir, 'files'));
  const parquet = await embed('parquet', 'parquet', join(dir, 'parquet'));
  assert.match(lastStderr, /done: 12 samples embedded/); // the failed download row is not a sample
  for (const other of [files, parquet]) {
    assert.equal(other.size, items.length);
    for (const it of items) {
      assert.deepEqual(other.get(it.key)!.img, wds.get(it.key)!.img, it.key);
      assert.deepEqual(other.get(it.key)!.txt, wds.get(it.key)!.txt, it.key);
    }
  }
});

test('text only (--enable_image False) with a model that takes attention_mask: the mask is fed, embeddings equal the unmasked model\'s', async () => {
  const masked = writeTinyClip(join(dir, 'masked'), { withAttentionMask: true });
  const run = async (m: string, out: string): Promise<Float32Array> => {
    const code = await silence(() => main(['--input-dataset', join(dir, 'wds', '00000.tar'), '--input-format', 'webdataset', '--output-folder', out, '--clip-model', m, '--enable-image', 'False']));
    assert.equal(code, 0, lastStderr);
    assert.ok(!existsSync(join(out, 'img_emb')));
    const types = await metadataTypes(join(out, 'metadata', 'metadata_0.parquet'));
    assert.deepEqual(Object.keys(types), ['caption']);
    return (await readNpy(join(out, 'text_emb', 'text_emb_0.npy'))).data;
  };
  const withMask = await run(masked, join(dir, 'out-masked'));
  assert.match(lastStderr, /77 ids \+ attention_mask/);
  const plain = await run(model, join(dir, 'out-unmasked'));
  assert.equal(withMask.length, 6 * 16);
  assert.deepEqual(withMask, plain);
});

test('bad command lines exit 2 in one line; a model folder with a wrong input name exits 1 in one line', async () => {
  assert.equal(await silence(() => main(['--input-dataset', 'x', '--output-folder', 'y'])), 2);
  assert.match(lastStderr, /^error: --clip-model is required/m);
  assert.equal(await silence(() => main(['--input-dataset', 'x', '--output-folder', 'y', '--clip-model', model, '--batch-size', '0'])), 2);
  const renamed = writeTinyClip(join(dir, 'renamed'), { pixelValuesName: 'images' });
  const code = await silence(() => main(['--input-dataset', join(dir, 'wds'), '--input-format', 'webdataset', '--output-folder', join(dir, 'out-bad'), '--clip-model', renamed]));
  assert.equal(code, 1);
  const errors = lastStderr.split('\n').filter((l) => l.startsWith('error:'));
  assert.equal(errors.length, 1);
  assert.match(errors[0]!, /vision_model\.onnx: no input named pixel_values \(it has images\)/);
  assert.ok(!existsSync(join(dir, 'out-bad', 'img_emb')));
});

test('kill -9 mid-run, then a rerun: finished partitions skipped, the outputs byte-identical to a clean run', async () => {
  // 8 tars of 12 samples, one partition each.
  const many = join(dir, 'many');
  await mkdir(many);
  for (let t = 0; t < 8; t++) {
    await writeTar(join(many, `${String(t).padStart(5, '0')}.tar`), items.map((it) => ({ key: `${t}${it.key.slice(1)}`, members: wdsMembers(it) })));
  }
  const args = (out: string): string[] => [
    'inference', '--input_dataset', many, '--input_format', 'webdataset', '--output_folder', out, '--clip_model', model,
    '--enable_metadata', 'True', '--wds_number_file_per_input_file', '12', '--write_batch_size', '12', '--batch_size', '4',
  ];
  const script = 'embeddings-indices-hosting/run.ts';
  const clean = await runCli(script, args(join(dir, 'clean')));
  assert.equal(clean.code, 0, clean.stderr);

  const out = join(dir, 'killed');
  const { child, done } = startCli(script, args(out));
  const first = join(out, 'metadata', 'metadata_0.parquet');
  while (!existsSync(first) && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
  child.kill('SIGKILL');
  const killed = await done;
  const finishedBefore = existsSync(join(out, 'metadata')) ? readdirSync(join(out, 'metadata')).filter((f) => f.startsWith('metadata_')).length : 0;
  process.stderr.write(`kill test: ${killed.signal ?? 'exited'} with ${finishedBefore} of 8 partitions finished\n`);
  const rerun = await runCli(script, args(out));
  assert.equal(rerun.code, 0, rerun.stderr);
  if (killed.signal === 'SIGKILL' && finishedBefore < 8) assert.match(rerun.stderr, new RegExp(`${finishedBefore} partition\\(s\\) already finished, skipped`));
  for (const sub of ['img_emb', 'text_emb', 'metadata']) {
    const names = readdirSync(join(dir, 'clean', sub)).sort();
    assert.equal(names.length, 8);
    assert.deepEqual(readdirSync(join(out, sub)).sort(), names, `${sub}: no leftovers, nothing missing`);
    for (const f of names) assert.ok(readFileSync(join(out, sub, f)).equals(readFileSync(join(dir, 'clean', sub, f))), `${sub}/${f} differs`);
  }
});
