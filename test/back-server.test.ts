// `run.ts back` end to end over a small index built by `run.ts inference` + `run.ts index` with the
// tiny CLIP model: each endpoint's JSON shape (requests as ClipClient and clip-retrieval's front send
// them, reference/clip-retrieval.md 4.6-4.10), colour + shape queries land on that picture, results equal a
// direct faiss search of the same index, every bad request gets a 400 and the server keeps serving.
import assert from 'node:assert/strict';
import { existsSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { TINY_COLOURS } from '../demo/tiny-clip.ts';
import { locateModelFiles, normalizeRows, openTextTower } from '../embeddings-indices-hosting/inference/clip-model.ts';
import { ClipTokenizer } from '../embeddings-indices-hosting/inference/tokenizer.ts';
import { faissAvailable, loadFaiss, readIndex } from '../lib/faiss/index.ts';
import { buildBackFixture, startBack, type BackFixture, type RunningBack } from './helpers/back-fixture.ts';
import { runCli } from './helpers/cli-process.ts';

const skip = faissAvailable().ok ? false : 'faiss addon not built (bash .ci/install)';
let fx: BackFixture;
let back: RunningBack;
let privateBack: RunningBack;

before(async () => {
  if (skip) return;
  fx = await buildBackFixture();
  // Both indices_paths.json forms: a folder string and an options object.
  back = await startBack(fx, { demo: { indice_folder: fx.indexFolder, clip_model: fx.model, enable_faiss_memory_mapping: true }, plain: fx.indexFolder }, ['--clip-model', fx.model]);
  privateBack = await startBack(fx, { demo: fx.indexFolder }, ['--clip_model', fx.model, '--allow_private_addresses', '--columns_to_return', '["caption","url"]']);
});
after(async () => {
  await back?.stop();
  await privateBack?.stop();
  await fx?.close();
});

/** The body ClipClient posts: all 14 keys, nulls included. */
function clipClientBody(over: Record<string, unknown>): Record<string, unknown> {
  return {
    text: null, image: null, image_url: null, embedding_input: null, deduplicate: true, use_safety_model: true, use_violence_detector: true,
    indice_name: 'demo', use_mclip: false, aesthetic_score: '9', aesthetic_weight: '0.5', modality: 'image', num_images: 40, num_result_ids: 40, ...over,
  };
}

async function post(base: string, path: string, body: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(base + path, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

type Hit = { id: number; similarity: number; caption?: string; url?: string; NSFW?: string; image_path?: string };

test('/indices-list, /config.json, / and the static files', { skip }, async () => {
  assert.deepEqual(await (await fetch(back.url + '/indices-list')).json(), ['demo', 'plain']);
  const config = (await (await fetch(back.url + '/config.json')).json()) as Record<string, unknown>;
  assert.deepEqual(config, { defaultBackend: back.url, defaultIndex: '', urlColumn: 'url' });
  for (const [path, type] of [['/', 'text/html'], ['/app.js', 'text/javascript'], ['/style.css', 'text/css']] as const) {
    const res = await fetch(back.url + path);
    assert.equal(res.status, 200, path);
    assert.match(res.headers.get('content-type')!, new RegExp(type));
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.ok((await res.text()).length > 0);
  }
  const pre = await fetch(back.url + '/knn-service', { method: 'OPTIONS', headers: { Origin: 'http://elsewhere', 'Access-Control-Request-Method': 'POST' } });
  assert.equal(pre.status, 204);
  assert.match(pre.headers.get('access-control-allow-methods')!, /POST/);
  assert.equal((await fetch(back.url + '/nope')).status, 404);
});

test('/knn-service: a ClipClient text query naming a colour and a shape returns that picture, then that colour, in the reference shape', { skip }, async () => {
  for (const [colour, shape] of [['red', 'circle'], ['green', 'square'], ['blue', 'triangle'], ['yellow', 'star'], ['black', 'square']] as const) {
    const r = await post(back.url, '/knn-service', clipClientBody({ text: `a ${colour} ${shape}`, deduplicate: false, use_safety_model: false, num_images: 8, num_result_ids: 20 }));
    assert.equal(r.status, 200);
    const hits = r.json as Hit[];
    assert.ok(Array.isArray(hits));
    assert.equal(hits.length, 20);
    const seen = JSON.stringify(hits.slice(0, 8).map((x) => x.caption));
    // Two images (two sizes) of each colour and shape: those first, then the other shapes of that colour.
    for (const h of hits.slice(0, 2)) assert.equal(h.caption, `a ${colour} ${shape}`, `${colour} ${shape}: ${seen}`);
    for (const h of hits.slice(2, 8)) assert.match(h.caption!, new RegExp(`^a ${colour} (?!${shape}$)`), `${colour} ${shape}: ${seen}`);
    // First num_images carry metadata (columns_to_return ∩ stored), the rest only id and similarity.
    for (const h of hits.slice(0, 8)) assert.deepEqual(Object.keys(h).sort(), ['NSFW', 'caption', 'id', 'image_path', 'similarity', 'url']);
    for (const h of hits.slice(8)) assert.deepEqual(Object.keys(h).sort(), ['id', 'similarity']);
    for (let i = 1; i < hits.length; i++) assert.ok(hits[i]!.similarity <= hits[i - 1]!.similarity + 1e-6);
    assert.ok(hits.every((h) => Number.isInteger(h.id)));
  }
});

test('/knn-service results equal a direct search of the same index (text and image modality)', { skip }, async () => {
  const files = locateModelFiles(fx.model, { image: false, text: true });
  const tower = await openTextTower(files.text, { device: 'cpu', intraOpThreads: 1 });
  const tok = ClipTokenizer.fromModelFiles(files);
  for (const modality of ['image', 'text'] as const) {
    const index = await readIndex(join(fx.indexFolder, `${modality}.index`));
    const batch = tok.encodeBatch(['a magenta square']);
    const q = normalizeRows(Float32Array.from(await tower.run(batch.ids, batch.mask, 1)), 1, tower.dim);
    const direct = await index.search(q, 1, 15);
    const r = await post(back.url, '/knn-service', clipClientBody({ text: 'a magenta square', modality, deduplicate: false, use_safety_model: false, num_images: 15, num_result_ids: 15 }));
    const hits = r.json as Hit[];
    assert.deepEqual(hits.map((h) => h.id), [...direct.labels].map(Number));
    hits.forEach((h, i) => assert.ok(Math.abs(h.similarity - direct.distances[i]!) < 1e-5));
    // embedding_input: the same vector gives the same answer, used as sent.
    const e = await post(back.url, '/knn-service', clipClientBody({ embedding_input: [...q], modality, deduplicate: false, use_safety_model: false, num_images: 15, num_result_ids: 15 }));
    assert.deepEqual((e.json as Hit[]).map((h) => h.id), [...direct.labels].map(Number));
    index.dispose();
  }
});

test('/knn-service: image (base64) and image_url queries find the picture itself; deduplicate and safe mode filter', { skip }, async () => {
  const item = fx.items.find((i) => i.colour === 'blue' && i.shape === 'triangle')!;
  const b64 = fx.jpegs.get(item.key)!.toString('base64');
  const byImage = (await post(back.url, '/knn-service', clipClientBody({ image: b64, deduplicate: false, use_safety_model: false, num_images: 3 }))).json as Hit[];
  assert.equal(byImage[0]!.id, Number(item.key));
  assert.ok(byImage[0]!.similarity > 0.999);
  // The default back refuses loopback image URLs; the one started with --allow-private-addresses fetches it.
  const refused = await post(back.url, '/knn-service', clipClientBody({ image_url: item.url }));
  assert.equal(refused.status, 400);
  assert.match((refused.json as { error: string }).error, /loopback|private|allow-private-addresses/);
  const byUrl = await post(privateBack.url, '/knn-service', clipClientBody({ image_url: item.url, indice_name: null, deduplicate: false, use_safety_model: false, num_images: 3 }));
  assert.equal(byUrl.status, 200);
  const first = (byUrl.json as Hit[])[0]!;
  assert.equal(first.id, Number(item.key));
  assert.deepEqual(Object.keys(first).sort(), ['caption', 'id', 'similarity', 'url']);

  // Near-duplicate removal, checked against the index's own vectors: kept results are pairwise at
  // most 0.94 apart in inner product, every removed one is above 0.94 with some result, and the
  // best-ranked result stays first. (The tiny model maps every image of one colour and shape to
  // almost the same vector, so each collapses to one or a few results.)
  const dupB64 = fx.jpegs.get(fx.items.find((i) => i.colour === 'cyan' && i.shape === 'square')!.key)!.toString('base64');
  const everything = fx.items.length;
  const all = (await post(back.url, '/knn-service', clipClientBody({ image: dupB64, deduplicate: false, use_safety_model: false, num_images: everything, num_result_ids: everything }))).json as Hit[];
  const dedup = (await post(back.url, '/knn-service', clipClientBody({ image: dupB64, deduplicate: true, use_safety_model: false, num_images: everything, num_result_ids: everything }))).json as Hit[];
  assert.equal(all.length, everything);
  assert.ok(dedup.length < all.length && dedup.length > 1, `${dedup.length}`);
  assert.equal(dedup[0]!.id, all[0]!.id);
  const index = await readIndex(join(fx.indexFolder, 'image.index'));
  const vec = (id: number): Float32Array => {
    const v = index.reconstruct(id);
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  };
  const dot = (a: Float32Array, b: Float32Array): number => a.reduce((s, x, j) => s + x * b[j]!, 0);
  const kept = dedup.map((h) => vec(h.id));
  for (let i = 0; i < kept.length; i++) for (let j = i + 1; j < kept.length; j++) assert.ok(dot(kept[i]!, kept[j]!) <= 0.94);
  const keptIds = new Set(dedup.map((h) => h.id));
  for (const h of all) if (!keptIds.has(h.id)) assert.ok(all.some((o) => o.id !== h.id && dot(vec(o.id), vec(h.id)) > 0.94));
  assert.deepEqual(dedup.map((h) => h.id), all.filter((h) => keptIds.has(h.id)).map((h) => h.id), 'rank order kept');
  index.dispose();

  // Safe mode drops the rows tagged NSFW.
  const nsfw = fx.items.filter((i) => i.nsfw === 'NSFW').map((i) => Number(i.key));
  assert.ok(nsfw.length > 0);
  const unsafe = (await post(back.url, '/knn-service', clipClientBody({ embedding_input: new Array(16).fill(0).map((_, j) => (j === 15 ? 1 : 0)), use_safety_model: false, deduplicate: false, num_images: everything, num_result_ids: everything }))).json as Hit[];
  const safe = (await post(back.url, '/knn-service', clipClientBody({ embedding_input: new Array(16).fill(0).map((_, j) => (j === 15 ? 1 : 0)), use_safety_model: true, deduplicate: false, num_images: everything, num_result_ids: everything }))).json as Hit[];
  assert.equal(unsafe.length, everything);
  assert.equal(safe.length, everything - nsfw.length);
  assert.ok(safe.every((h) => !nsfw.includes(h.id) && h.NSFW !== 'NSFW'));
});

test('/metadata: ids to {id, metadata}, [] for none', { skip }, async () => {
  const r = await post(back.url, '/metadata', { indice_name: 'demo', ids: [3, 0, fx.items.length - 1] });
  assert.equal(r.status, 200);
  const rows = r.json as Array<{ id: number; metadata: Record<string, unknown> }>;
  assert.deepEqual(rows.map((x) => x.id), [3, 0, fx.items.length - 1]);
  for (const x of rows) {
    const item = fx.items[x.id]!;
    assert.deepEqual(x.metadata, { url: item.url, image_path: item.key, caption: item.caption, NSFW: item.nsfw });
  }
  assert.deepEqual((await post(back.url, '/metadata', { indice_name: 'demo', ids: [] })).json, []);
});

test('bad requests get HTTP 400 {"error"} and the server answers the next good one', { skip }, async () => {
  const good = clipClientBody({ text: 'a red square', num_images: 2, num_result_ids: 2, deduplicate: false });
  const bad: Array<[string, unknown]> = [
    ['bad JSON', '{"text": "a cat", '],
    ['not an object', '[1,2]'],
    ['unknown index', { ...good, indice_name: 'nope' }],
    ['missing modality', { ...good, modality: undefined }],
    ['missing num_images', { ...good, num_images: undefined }],
    ['wrong-typed num_images', { ...good, num_images: '10' }],
    ['negative num_result_ids', { ...good, num_result_ids: -3 }],
    ['too many results', { ...good, num_result_ids: 10_000_000 }],
    ['wrong-typed text', { ...good, text: 42 }],
    ['wrong-typed deduplicate', { ...good, deduplicate: 'yes' }],
    ['no query at all', clipClientBody({})],
    ['embedding of the wrong size', clipClientBody({ embedding_input: [1, 2, 3] })],
    ['embedding of non-numbers', clipClientBody({ embedding_input: ['a'] })],
    ['image that is not base64', clipClientBody({ image: '***' })],
    ['image that does not decode', clipClientBody({ image: Buffer.from('this is not an image at all').toString('base64') })],
    ['truncated JPEG', clipClientBody({ image: fx?.jpegs.get('000000001')?.subarray(0, 60).toString('base64') })],
    ['image_url at a private address', clipClientBody({ image_url: 'http://10.0.0.1/x.jpg' })],
    ['image_url at the metadata address', clipClientBody({ image_url: 'http://169.254.169.254/latest/meta-data' })],
    ['image_url not a URL', clipClientBody({ image_url: 'not a url' })],
    ['image_url file scheme', clipClientBody({ image_url: 'file:///etc/passwd' })],
    ['bad aesthetic_score', { ...good, aesthetic_score: 'high' }],
    ['use_mclip', { ...good, use_mclip: true }],
    ['metadata ids not a list', { indice_name: 'demo', ids: 'all' }],
  ];
  for (const [what, body] of bad) {
    const path = what.startsWith('metadata') ? '/metadata' : '/knn-service';
    const r = await post(back.url, path, body);
    assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.json)}`);
    assert.equal(typeof (r.json as { error: unknown }).error, 'string', what);
    const ok = await post(back.url, '/knn-service', good);
    assert.equal(ok.status, 200, `after ${what}`);
    assert.equal((ok.json as Hit[]).length, 2);
  }
  // An oversized body: refused from its Content-Length, server still fine.
  const big = await fetch(back.url + '/knn-service', { method: 'POST', body: JSON.stringify({ ...good, image: 'A'.repeat(17 * 1024 * 1024) }) });
  assert.equal(big.status, 400);
  assert.match(((await big.json()) as { error: string }).error, /limit/);
  assert.equal((await post(back.url, '/knn-service', good)).status, 200);
  // The same without a Content-Length (chunked): cut off by the running count.
  const chunk = new TextEncoder().encode('A'.repeat(1 << 20));
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent++ < 17) c.enqueue(chunk);
      else c.close();
    },
  });
  const chunked = await fetch(back.url + '/knn-service', { method: 'POST', body: stream, duplex: 'half' } as RequestInit);
  assert.equal(chunked.status, 400);
  assert.match(((await chunked.json()) as { error: string }).error, /over \d+ bytes/);
  assert.equal((await post(back.url, '/knn-service', good)).status, 200);
  // Wrong method.
  assert.equal((await fetch(back.url + '/knn-service')).status, 405);
  assert.match(back.stderr(), /listening on/);
});

test('concurrent queries are all answered, and /metrics counts them per endpoint', { skip }, async () => {
  const colours = Object.keys(TINY_COLOURS);
  const rs = await Promise.all(Array.from({ length: 32 }, (_, i) => post(back.url, '/knn-service', clipClientBody({ text: `a ${colours[i % colours.length]} triangle`, deduplicate: false, use_safety_model: false, num_images: 1 }))));
  rs.forEach((r, i) => {
    assert.equal(r.status, 200);
    assert.match((r.json as Hit[])[0]!.caption!, new RegExp(`^a ${colours[i % colours.length]} `));
  });
  const text = await (await fetch(back.url + '/metrics')).text();
  const okCount = Number(/back_requests_total\{endpoint="\/knn-service",status="200"\} (\d+)/.exec(text)?.[1]);
  assert.ok(okCount >= 32, text.slice(0, 500));
  assert.match(text, /# TYPE back_request_duration_seconds histogram/);
  assert.match(text, /back_request_duration_seconds_bucket\{endpoint="\/knn-service",le="\+Inf"\} \d+/);
  assert.match(text, /knn_index_time_count \d+/);
  assert.match(text, /text_clip_inference_time_sum [\d.e-]+/);
  assert.match(await (await fetch(back.url + '/metrics-summary')).text(), /^Among \d+ calls to the knn end point/);
});

test('run.ts back: --help, bad arguments exit 2, a bad indices_paths.json exits 1 with one line', { skip }, async () => {
  const { runCli } = await import('./helpers/cli-process.ts');
  const help = await runCli('embeddings-indices-hosting/run.ts', ['back', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--indices-paths/);
  assert.match(help.stdout, /--enable-faiss-memory-mapping/);
  const bad = await runCli('embeddings-indices-hosting/run.ts', ['back', '--port', 'abc']);
  assert.equal(bad.code, 2);
  const missing = await runCli('embeddings-indices-hosting/run.ts', ['back', '--indices-paths', join(fx.dir, 'nope.json'), '--port', '0']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nope\.json: no such file/);
});

test('run.ts back writes the 8-bit scan copy of an IVF-SQfp16 index at the first start, reuses it after, and answers as without it', { skip }, async () => {
  const folder = join(fx.dir, 'index-sqfp16');
  const built = await runCli('embeddings-indices-hosting/run.ts', ['index', '--embeddings-folder', join(fx.dir, 'emb'), '--index-folder', folder, '--index-key', 'IVF2,SQfp16']);
  assert.equal(built.code, 0, built.stderr.slice(-2000));
  const paths = { sq: { indice_folder: folder, enable_faiss_memory_mapping: true } };
  // left by a writer killed mid-copy (no such process, unchanged for an hour): removed at the next
  // start; a recent one may be another machine's writer at work and stays
  const orphan = join(folder, 'image.sq8.tmp-999999999');
  const recent = join(folder, 'image.sq8.tmp-999999998');
  writeFileSync(orphan, 'partial');
  writeFileSync(recent, 'partial');
  const hourAgo = new Date(Date.now() - 3600_000);
  utimesSync(orphan, hourAgo, hourAgo);
  const first = await startBack(fx, paths);
  assert.equal(existsSync(orphan), false);
  assert.equal(existsSync(recent), true);
  const second = await startBack(fx, paths);
  const without = await startBack(fx, paths, ['--sq8-copy', 'False']);
  try {
    if (loadFaiss().fastFp16Scan) {
      assert.match(first.stderr(), /index sq: wrote the 8-bit scan copy .*image\.sq8 in /);
      assert.match(second.stderr(), /index sq: 8-bit scan copy .*image\.sq8\n/);
      assert.ok(existsSync(join(folder, 'image.sq8')));
    }
    assert.doesNotMatch(without.stderr(), /8-bit scan copy/);
    const dim = (await readIndex(join(folder, 'image.index'))).d;
    for (let i = 0; i < 5; i++) {
      const embedding = Array.from({ length: dim }, (_, j) => Math.sin(i * 7 + j));
      const body = clipClientBody({ indice_name: 'sq', embedding_input: embedding, num_images: 10, num_result_ids: 10 });
      const a = await post(first.url, '/knn-service', body);
      const b = await post(without.url, '/knn-service', body);
      assert.equal(a.status, 200);
      assert.deepEqual(a.json, b.json);
      assert.ok((a.json as Hit[]).length > 0);
    }
  } finally {
    await first.stop();
    await second.stop();
    await without.stop();
  }
});
