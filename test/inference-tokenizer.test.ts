// The tokenizer against CLIP's own BPE on 10,000 real LAION captions. The expected ids come from
// bench/clip-simple-tokenizer.py (CLIP's algorithm over its published merges), run once into
// test/fixtures/clip-bpe-ids-laion-10000.jsonl.gz; the merges themselves are read from ../shared/data.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { byteSymbolsInVocabOrder, writeTinyClip } from '../demo/tiny-clip.ts';
import { CONTEXT_LENGTH, locateModelFiles } from '../embeddings-indices-hosting/inference/clip-model.ts';
import { ClipTokenizer } from '../embeddings-indices-hosting/inference/tokenizer.ts';

const root = new URL('..', import.meta.url).pathname;
const MERGES_GZ = join(root, '..', 'shared', 'data', 'clip-bpe', 'bpe_simple_vocab_16e6.txt.gz');
const CAPTIONS = join(root, '..', 'shared', 'data', 'img2dataset-tests', 'test_files', 'captions_10000.jsonl');
const EXPECTED = join(root, 'test', 'fixtures', 'clip-bpe-ids-laion-10000.jsonl.gz');

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'clip-tok-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('LAION captions: vocab.json + merges.txt built from CLIP\'s merges give CLIP\'s ids', { skip: !existsSync(MERGES_GZ) && 'no ../shared/data' }, async () => {
  // The standard Hugging Face files for CLIP, from the published merges (data/README.md's recipe).
  const lines = gunzipSync(readFileSync(MERGES_GZ)).toString('utf8').split('\n');
  const merges = lines.slice(1, 49152 - 256 - 2 + 1);
  const bytes = byteSymbolsInVocabOrder();
  const symbols = [...bytes, ...bytes.map((s) => `${s}</w>`), ...merges.map((m) => m.replace(' ', '')), '<|startoftext|>', '<|endoftext|>'];
  const vocab = Object.fromEntries(symbols.map((s, i) => [s, i]));
  await writeFile(join(dir, 'vocab.json'), JSON.stringify(vocab));
  await writeFile(join(dir, 'merges.txt'), `#version: 0.2\n${merges.join('\n')}\n`);
  await writeFile(join(dir, 'config.json'), '{}');
  const files = locateModelFiles(dir, { image: false, text: false });
  assert.equal(files.tokenizerJson, null);
  const tok = ClipTokenizer.fromModelFiles(files);
  assert.deepEqual([tok.sot, tok.eot], [49406, 49407]);

  const captions = readFileSync(CAPTIONS, 'utf8').trim().split('\n').map((l) => String(JSON.parse(l) ?? ''));
  const expected = gunzipSync(readFileSync(EXPECTED)).toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as { openai: number[]; plain: number[] });
  assert.equal(captions.length, 10000);
  assert.equal(expected.length, captions.length);
  let samePlain = 0;
  let sameOpenai = 0;
  const diffs: string[] = [];
  captions.forEach((c, i) => {
    const ids = tok.tokenIds(c);
    if (JSON.stringify(ids) === JSON.stringify(expected[i]!.plain)) samePlain++;
    else if (diffs.length < 5) diffs.push(`${i}: ${JSON.stringify(c)}`);
    if (JSON.stringify(ids) === JSON.stringify(expected[i]!.openai)) sameOpenai++;
  });
  process.stderr.write(`tokenizer vs CLIP BPE on ${captions.length} LAION captions: same pipeline ${samePlain}, clip.tokenize (ftfy + HTML unescape) ${sameOpenai}\n`);
  // Same pipeline (no ftfy / HTML unescaping, as tokenizer.json): every caption.
  assert.equal(samePlain, captions.length, diffs.join('\n'));
  // clip.tokenize itself: all but the captions that ftfy or HTML unescaping change (about 0.3-1%).
  assert.ok(sameOpenai >= 0.98 * captions.length, `${sameOpenai}`);
});

test('framing: SOT, at most 75 tokens, EOT, zero padding to 77; mask covers SOT..EOT', async () => {
  const m = writeTinyClip(join(dir, 'tiny'));
  const tok = ClipTokenizer.fromModelFiles(locateModelFiles(m, { image: false, text: true }));
  const short = tok.encodeBatch(['A  Red\tCircle']);
  const body = tok.tokenIds('a red circle');
  assert.equal(body.length, 3); // one token per word in the tiny vocabulary
  assert.deepEqual(Array.from(short.ids.subarray(0, 6), Number), [tok.sot, ...body, tok.eot, 0]);
  assert.equal(short.ids.length, CONTEXT_LENGTH);
  assert.deepEqual(Array.from(short.mask.subarray(0, 6), Number), [1, 1, 1, 1, 1, 0]);

  const long = tok.encodeBatch([Array.from({ length: 100 }, () => 'red').join(' '), '']);
  const row0 = Array.from(long.ids.subarray(0, CONTEXT_LENGTH), Number);
  assert.equal(row0[0], tok.sot);
  assert.equal(row0[76], tok.eot);
  assert.ok(row0.slice(1, 76).every((id) => id === body[1]));
  const row1 = Array.from(long.ids.subarray(CONTEXT_LENGTH), Number);
  assert.deepEqual(row1.slice(0, 3), [tok.sot, tok.eot, 0]);
  assert.ok(row1.slice(2).every((id) => id === 0));
});
