import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { imageSpecFor, shapeContentFor, visibleColour, visibleShape } from '../demo/images.ts';
import { TINY_COLOURS, TINY_SHAPES } from '../demo/tiny-clip.ts';
import { openDb, sqlString } from '../lib/parquet.ts';
import { startBack } from './helpers/back-fixture.ts';
import { runCli, startCli } from './helpers/cli-process.ts';

test('npm run demo -- --no-serve: every stage runs on the synthetic crawl and chains through files; text search finds colour and shape', async () => {
  const root = await mkdtemp(join(tmpdir(), 'demo-'));
  const out = join(root, 'out');
  try {
    const r = await runCli('demo/run.ts', ['--no-serve', '--files', '8', '--rows', '60', '--output-folder', out]);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    // Stage 1: every CSV complete.
    const manifest = readFileSync(join(out, 'csv', '_manifest.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { status: string });
    assert.equal(manifest.length, 8);
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
    // Stage 4: embeddings of every successful sample, both indices over them, a score.
    const emb = await openDb();
    let embedded = 0;
    try {
      const [m] = await emb.all<{ n: bigint }>(`SELECT count(*) AS n FROM read_parquet(${sqlString(join(out, 'embeddings', 'metadata', '*.parquet'))})`);
      embedded = Number(m!.n);
    } finally {
      emb.close();
    }
    assert.ok(embedded > 0.8 * summary.rows_unique, `${embedded} embedded`);
    for (const name of ['image', 'text']) {
      assert.ok(existsSync(join(out, 'index', `${name}.index`)), `${name}.index`);
      const infos = JSON.parse(readFileSync(join(out, 'index', `${name}.json`), 'utf8')) as Record<string, number>;
      assert.equal(infos['nb vectors'], embedded);
    }
    const score = JSON.parse(readFileSync(join(out, 'index', 'score.json'), 'utf8')) as Record<string, { 'recall@10': number }>;
    assert.ok(score.image!['recall@10'] >= 0.9, JSON.stringify(score));
    assert.match(r.stderr, /demo pipeline done/);
    assert.match(r.stderr, /index score: image /);
    assert.doesNotMatch(r.stderr, /listening on/);
    await searchByColourAndShape(out);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

/**
 * `run.ts back` over the demo's index: for every colour and shape the demo drew, the text query
 * "a <colour> <shape>" returns pictures of that colour and shape first (the top min(10, how many
 * the index holds)), judged by what demo/images.ts drew for each URL, not by the captions.
 */
async function searchByColourAndShape(out: string): Promise<void> {
  const back = await startBack({ dir: out }, { demo: { indice_folder: join(out, 'index'), clip_model: join(out, 'model') } });
  try {
    const db = await openDb();
    let urls: string[];
    try {
      urls = (await db.all<{ url: string }>(`SELECT url FROM read_parquet(${sqlString(join(out, 'embeddings', 'metadata', '*.parquet'))})`)).map((x) => x.url);
    } finally {
      db.close();
    }
    /** What the picture behind a result URL shows, e.g. "red circle", or null (a fault URL, greyscale, too small). */
    const truth = (url: string): string | null => {
      const m = /\/images\/(\d+)\.jpg$/.exec(url);
      if (!m) return null;
      const spec = imageSpecFor(Number(m[1]));
      const content = shapeContentFor(spec.n, spec.seed);
      const colour = visibleColour(spec, content);
      const shape = visibleShape(spec, content);
      return colour && shape ? `${colour} ${shape}` : null;
    };
    const held = new Map<string, number>();
    for (const u of urls) {
      const t = truth(u);
      if (t) held.set(t, (held.get(t) ?? 0) + 1);
    }
    const pairs = Object.keys(TINY_COLOURS).flatMap((c) => TINY_SHAPES.map((s) => `${c} ${s}`)).filter((p) => held.has(p));
    // Every colour the demo draws (white is only a background) with every shape.
    assert.equal(pairs.length, (Object.keys(TINY_COLOURS).length - 1) * TINY_SHAPES.length, JSON.stringify([...held]));
    let checked = 0;
    for (const pair of pairs) {
      const want = Math.min(10, held.get(pair)!);
      const res = await fetch(`${back.url}/knn-service`, {
        method: 'POST',
        body: JSON.stringify({ text: `a ${pair}`, modality: 'image', indice_name: 'demo', num_images: want, deduplicate: false, use_safety_model: false }),
      });
      assert.equal(res.status, 200);
      const hits = (await res.json()) as Array<{ url: string; caption: string }>;
      assert.equal(hits.length, want);
      assert.deepEqual(hits.map((h) => truth(h.url)), new Array(want).fill(pair), `a ${pair}: ${JSON.stringify(hits.map((h) => [truth(h.url), h.caption, h.url]))}`);
      checked += want;
    }
    assert.ok(checked >= 150, `${checked} results checked`);
    process.stderr.write(`demo text search: ${pairs.length} colour/shape pairs, top ${checked} results all showing the pair asked for\n`);
  } finally {
    await back.stop();
  }
}

test('npm run demo: serves the search page over the demo index, prints its URL, stops cleanly on SIGTERM', async () => {
  const root = await mkdtemp(join(tmpdir(), 'demo-serve-'));
  const out = join(root, 'out');
  const run = startCli('demo/run.ts', ['--files', '2', '--rows', '30', '--output-folder', out, '--back-port', '0']);
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let err = '';
      run.child.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /demo search page: (http:\/\/\S+)/.exec(err);
        if (m) resolve(m[1]!.replace(/\/$/, ''));
      });
      void run.done.then((r) => reject(new Error(`demo exited with ${r.code}: ${r.stderr.slice(-3000)}`)));
    });
    assert.deepEqual(await (await fetch(`${url}/indices-list`)).json(), ['demo']);
    const page = await fetch(`${url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<form id="search"/);
    const res = await fetch(`${url}/knn-service`, { method: 'POST', body: JSON.stringify({ text: 'red', modality: 'image', num_images: 5, indice_name: 'demo' }) });
    assert.equal(res.status, 200);
    const hits = (await res.json()) as Array<{ id: number; url: string; caption: string; similarity: number }>;
    assert.equal(hits.length, 5);
    // The result URLs are the crawl host's images, still served while the page is.
    const img = await fetch(hits[0]!.url);
    assert.equal(img.status, 200);
    // "Search images like this one": the page sends the result's URL (loopback, allowed in the demo).
    const like = await fetch(`${url}/knn-service`, { method: 'POST', body: JSON.stringify({ image_url: hits[0]!.url, modality: 'image', num_images: 3, indice_name: 'demo' }) });
    assert.equal(like.status, 200, await like.clone().text());
  } finally {
    run.child.kill('SIGTERM');
    const r = await run.done;
    await rm(root, { recursive: true, force: true });
    assert.equal(r.code, 0, r.stderr.slice(-2000));
  }
});
