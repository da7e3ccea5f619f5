import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { writeTinyClip, TINY_EMBED_DIM, TINY_IMAGE_SIZE } from '../demo/tiny-clip.ts';
import { QueryEncoder } from '../embeddings-indices-hosting/back/encoder.ts';
import { loadModels } from '../embeddings-indices-hosting/inference/inference.ts';
import { locateModelFiles, ModelFolderError, openImageTower, openTextTower, type SessionOptions } from '../embeddings-indices-hosting/inference/clip-model.ts';

let dir: string;
const cpu: SessionOptions = { device: 'cpu', intraOpThreads: 1 };
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'clip-model-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const oneLine = (err: unknown): boolean => err instanceof ModelFolderError && !err.message.includes('\n');

test('the tiny model folder loads: towers, dims, attention_mask detected only where present', async () => {
  const plain = writeTinyClip(join(dir, 'plain'));
  const masked = writeTinyClip(join(dir, 'masked'), { withAttentionMask: true });
  const files = locateModelFiles(plain, { image: true, text: true });
  const image = await openImageTower(files.vision, TINY_IMAGE_SIZE, cpu);
  assert.equal(image.dim, TINY_EMBED_DIM);
  const emb = await image.run(new Float32Array(2 * 3 * TINY_IMAGE_SIZE ** 2), 2);
  assert.equal(emb.length, 2 * TINY_EMBED_DIM);
  assert.equal((await openTextTower(files.text, cpu)).takesAttentionMask, false);
  assert.equal((await openTextTower(locateModelFiles(masked, { image: false, text: true }).text, cpu)).takesAttentionMask, true);
});

test('a batch fed in runs of a few rows gives the embeddings of one whole-batch run, rows in order', async () => {
  const m = writeTinyClip(join(dir, 'runs'), { withAttentionMask: true });
  const files = locateModelFiles(m, { image: true, text: true });
  const n = 7;
  const floats = 3 * TINY_IMAGE_SIZE ** 2;
  const pixels = new Float32Array(n * floats);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.sin(i * 0.37) * (1 + Math.floor(i / floats)); // rows differ
  const ids = new BigInt64Array(n * 77);
  const mask = new BigInt64Array(n * 77);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < 3 + r; j++) {
      ids[r * 77 + j] = BigInt(300 + ((r * 31 + j * 7) % 200));
      mask[r * 77 + j] = 1n;
    }
  }
  const whole = { ...cpu, rowsPerRun: 0 };
  const inThrees = { ...cpu, rowsPerRun: 3 };
  const imageWhole = await (await openImageTower(files.vision, TINY_IMAGE_SIZE, whole)).run(pixels, n);
  const imageRuns = await (await openImageTower(files.vision, TINY_IMAGE_SIZE, inThrees)).run(pixels, n);
  assert.equal(imageRuns.length, n * TINY_EMBED_DIM);
  assert.deepEqual(imageRuns, imageWhole);
  assert.notDeepEqual(imageWhole.subarray(0, TINY_EMBED_DIM), imageWhole.subarray(6 * TINY_EMBED_DIM)); // the rows are distinct
  const textWhole = await (await openTextTower(files.text, whole)).run(ids, mask, n);
  const textRuns = await (await openTextTower(files.text, inThrees)).run(ids, mask, n);
  assert.deepEqual(textRuns, textWhole);
});

test('a missing file, a wrong input name and a wrong shape are one-line errors naming the file', async () => {
  const m = writeTinyClip(join(dir, 'missing'));
  await unlink(join(m, 'onnx', 'text_model.onnx'));
  assert.throws(() => locateModelFiles(m, { image: true, text: true }), (e: unknown) => oneLine(e) && /text_model\.onnx is missing/.test((e as Error).message));
  // Image-only runs do not need the text tower.
  locateModelFiles(m, { image: true, text: false });

  const renamed = writeTinyClip(join(dir, 'renamed'), { pixelValuesName: 'images' });
  await assert.rejects(
    openImageTower(join(renamed, 'onnx', 'vision_model.onnx'), TINY_IMAGE_SIZE, cpu),
    (e: unknown) => oneLine(e) && /vision_model\.onnx: no input named pixel_values \(it has images\)/.test((e as Error).message),
  );

  const wrongSize = writeTinyClip(join(dir, 'wrong-size'), { declaredImageSize: 48 });
  await assert.rejects(
    openImageTower(join(wrongSize, 'onnx', 'vision_model.onnx'), TINY_IMAGE_SIZE, cpu),
    (e: unknown) => oneLine(e) && new RegExp(`pixel_values has shape \\[batch_size,3,48,48\\], expected \\[N,3,${TINY_IMAGE_SIZE},${TINY_IMAGE_SIZE}\\]`).test((e as Error).message),
  );
});

test('--dtype picks the Transformers.js variant files; a missing variant names the ones the folder has', async () => {
  const plain = writeTinyClip(join(dir, 'dtype-plain'));
  const int8Only = writeTinyClip(join(dir, 'dtype-int8'));
  // The variant files are the tiny model under int8's names, and the fp32 names are gone: only a
  // loader that reads the int8 names can open this folder.
  for (const tower of ['vision_model', 'text_model']) await rename(join(int8Only, 'onnx', `${tower}.onnx`), join(int8Only, 'onnx', `${tower}_int8.onnx`));
  const settings = { device: 'cpu' as const, intraOpThreads: 1, enableImage: true, enableText: true };
  const fp32 = await loadModels({ ...settings, clipModel: plain });
  const int8 = await loadModels({ ...settings, clipModel: int8Only, dtype: 'int8' });
  const pixels = new Float32Array(2 * 3 * TINY_IMAGE_SIZE ** 2).map((_, i) => Math.cos(i * 0.11));
  assert.deepEqual(await int8.image!.run(pixels, 2), await fp32.image!.run(pixels, 2));
  const { ids, mask } = int8.tokenizer!.encodeBatch(['a red circle']);
  assert.deepEqual(await int8.text!.run(ids, mask, 1), await fp32.text!.run(ids, mask, 1));
  assert.equal((await QueryEncoder.open(int8Only, 1, 'int8')).dim, TINY_EMBED_DIM); // back's query model

  assert.throws(
    () => locateModelFiles(int8Only, { image: true, text: true }, 'q8'),
    (e: unknown) => oneLine(e) && /onnx\/vision_model_quantized\.onnx is missing \(the image tower.*--dtype q8\); this folder has --dtype int8 /.test((e as Error).message),
  );
  assert.throws(
    () => locateModelFiles(int8Only, { image: false, text: true }),
    (e: unknown) => oneLine(e) && /onnx\/text_model\.onnx is missing \(.*--dtype fp32\); this folder has --dtype int8 /.test((e as Error).message),
  );
});

test('--device cuda where onnxruntime cannot start CUDA is an error, not a fall-back to CPU', async (t) => {
  const m = writeTinyClip(join(dir, 'cuda'));
  try {
    const tower = await openImageTower(join(m, 'onnx', 'vision_model.onnx'), TINY_IMAGE_SIZE, { device: 'cuda', intraOpThreads: 1 });
    t.skip(`CUDA is available here (dim ${tower.dim})`);
  } catch (e) {
    assert.ok(oneLine(e), String(e));
    assert.match((e as Error).message, /--device cuda: onnxruntime could not start that execution provider/);
  }
});
