// /knn-service and /metadata: requests read and checked field by field (reference/clip-retrieval.md
// 4.7, 4.10; shaped as ClipClient and clip-retrieval's front send them), the query embedded, faiss
// searched off the JS thread, then clip-retrieval's post-filters in its order: cut at the first -1,
// near-duplicate removal (inner product > 0.94 between result vectors, connected components, best
// ranked kept), safe mode (here: the NSFW column, rows tagged NSFW dropped), repeated ids dropped;
// metadata only for the first num_images results.
import sharp from 'sharp';
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { HttpError, type HttpClient } from '../../lib/http/client.ts';
import { createIndex, type NativeIndex, type SearchResult } from '../../lib/faiss/index.ts';
import { ImageDecodeError } from './encoder.ts';
import type { ServedIndex } from './indices.ts';
import type { MetadataRow, MetadataSource } from './metadata-store.ts';
import type { Metrics } from './metrics.ts';
import type { SearchThreads } from './search-threads.ts';

/** A request the client got wrong: HTTP 400 with {"error": message}. */
export class BadRequest extends Error {}

export const DEDUP_THRESHOLD = 0.94;
export const NSFW_COLUMN = 'NSFW';

export interface Limits {
  maxResultIds: number;
  maxImageBytes: number;
  imageUrlTimeoutMs: number;
}

export interface KnnQuery {
  index: ServedIndex;
  modality: 'image' | 'text';
  numImages: number;
  numResultIds: number;
  text: string | null;
  image: Buffer | null;
  imageUrl: string | null;
  embedding: Float32Array | null;
  deduplicate: boolean;
  useSafetyModel: boolean;
}

export type KnnResult = Record<string, unknown> & { id: number; similarity: number };

type Body = Record<string, unknown>;

function asObject(body: unknown): Body {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new BadRequest('the request body must be a JSON object');
  return body as Body;
}

function optionalBool(b: Body, key: string): boolean {
  const v = b[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw new BadRequest(`${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function optionalString(b: Body, key: string): string | null {
  const v = b[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') throw new BadRequest(`${key} must be a string or null`);
  return v;
}

function count(b: Body, key: string, required: boolean, max: number): number | null {
  const v = b[key];
  if (v === undefined || v === null) {
    if (required) throw new BadRequest(`${key} is required (a positive integer)`);
    return null;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new BadRequest(`${key} must be a positive integer, got ${JSON.stringify(v)}`);
  if (v > max) throw new BadRequest(`${key} is ${v}; this server returns at most ${max}`);
  return v;
}

/** aesthetic_score / aesthetic_weight arrive as strings ("" = off) or numbers: checked, then unused. */
function aesthetic(b: Body, key: string, integer: boolean): void {
  const v = b[key];
  if (v === undefined || v === null || v === '') return;
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  if (!Number.isFinite(n) || (integer && (!Number.isInteger(n) || n < 0 || n > 9))) {
    throw new BadRequest(`${key} must be ${integer ? 'an integer 0-9' : 'a number'} (or "" for none), got ${JSON.stringify(v)}`);
  }
}

function indexByName(indices: Map<string, ServedIndex>, b: Body): ServedIndex {
  if (!('indice_name' in b)) throw new BadRequest(`indice_name is required (one of ${[...indices.keys()].join(', ')}, or null for the first)`);
  const name = b.indice_name;
  if (name === null) return indices.values().next().value!;
  if (typeof name !== 'string') throw new BadRequest('indice_name must be a string or null');
  const index = indices.get(name);
  if (!index) throw new BadRequest(`unknown index ${JSON.stringify(name)}; this server has ${[...indices.keys()].join(', ')}`);
  return index;
}

function decodeBase64Image(s: string): Buffer {
  // Our own page sends a data URL's payload; a whole data URL is accepted too.
  const payload = s.startsWith('data:') ? s.slice(s.indexOf(',') + 1) : s;
  const clean = payload.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) throw new BadRequest('image must be base64 (the image file bytes)');
  const bytes = Buffer.from(clean, 'base64');
  if (bytes.length === 0) throw new BadRequest('image is empty');
  return bytes;
}

export function parseKnnRequest(body: unknown, indices: Map<string, ServedIndex>, limits: Limits): KnnQuery {
  const b = asObject(body);
  const index = indexByName(indices, b);
  if (typeof b.modality !== 'string') throw new BadRequest('modality is required: "image" or "text"');
  const modality = b.modality === 'image' ? 'image' : 'text';
  const numImages = count(b, 'num_images', true, limits.maxResultIds)!;
  const numResultIds = count(b, 'num_result_ids', false, limits.maxResultIds) ?? numImages;
  const text = optionalString(b, 'text');
  const image = optionalString(b, 'image');
  const imageUrl = optionalString(b, 'image_url');
  let embedding: Float32Array | null = null;
  const e = b.embedding_input;
  if (e !== undefined && e !== null) {
    if (!Array.isArray(e) || !e.every((x) => typeof x === 'number' && Number.isFinite(x))) throw new BadRequest('embedding_input must be a list of numbers');
    if (e.length !== index.dim) throw new BadRequest(`embedding_input has ${e.length} numbers; index ${index.name} has ${index.dim} dimensions`);
    embedding = Float32Array.from(e as number[]);
  }
  if (optionalBool(b, 'use_mclip')) throw new BadRequest('use_mclip: this server has no multilingual CLIP model; send use_mclip false');
  optionalBool(b, 'use_violence_detector');
  aesthetic(b, 'aesthetic_score', true);
  aesthetic(b, 'aesthetic_weight', false);
  const q: KnnQuery = {
    index,
    modality,
    numImages,
    numResultIds: Math.max(numResultIds, 1),
    text: text && text.length > 0 ? text : null,
    image: null,
    imageUrl: null,
    embedding: null,
    deduplicate: optionalBool(b, 'deduplicate'),
    useSafetyModel: optionalBool(b, 'use_safety_model'),
  };
  // clip-retrieval's precedence: a non-empty text, then image, then image_url, then embedding_input.
  if (q.text === null) {
    if (image !== null) q.image = decodeBase64Image(image);
    else if (imageUrl !== null) q.imageUrl = imageUrl;
    else if (embedding !== null) q.embedding = embedding;
    else throw new BadRequest('nothing to search with: send text, image, image_url or embedding_input');
  }
  if (q.image && q.image.length > limits.maxImageBytes) throw new BadRequest(`image is ${q.image.length} bytes; the limit is ${limits.maxImageBytes}`);
  if ((q.text !== null || q.image || q.imageUrl) && !index.encoder) {
    throw new BadRequest(`index ${index.name} has no CLIP model (start back with --clip-model or a clip_model in indices_paths.json); only embedding_input works`);
  }
  const target = modality === 'image' ? index.image : index.text;
  if (!target) throw new BadRequest(`index ${index.name} has no ${modality}.index; use modality ${modality === 'image' ? 'text' : 'image'}`);
  return q;
}

export interface KnnContext {
  http: HttpClient;
  metrics: Metrics;
  limits: Limits;
  searchThreads: SearchThreads;
}

async function fetchImage(url: string, ctx: KnnContext): Promise<Buffer> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new BadRequest(`image_url ${JSON.stringify(url.slice(0, 200))} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new BadRequest(`image_url must be http or https, got ${parsed.protocol}`);
  try {
    const res = await ctx.metrics.time('download_time', () => ctx.http.get(parsed.href, { timeoutMs: ctx.limits.imageUrlTimeoutMs, maxBytes: ctx.limits.maxImageBytes, maxRedirects: 5, retries: 0 }));
    return res.body;
  } catch (err) {
    if (err instanceof HttpError) throw new BadRequest(`image_url ${parsed.href} could not be fetched: ${err.message}`);
    throw err;
  }
}

async function queryVector(q: KnnQuery, ctx: KnnContext): Promise<Float32Array> {
  const enc = q.index.encoder;
  try {
    if (q.text !== null) return await enc!.encodeText(q.text, ctx.metrics);
    if (q.image) return await enc!.encodeImage(q.image, ctx.metrics);
    if (q.imageUrl) return await enc!.encodeImage(await fetchImage(q.imageUrl, ctx), ctx.metrics);
  } catch (err) {
    if (err instanceof ImageDecodeError) throw new BadRequest(`${q.imageUrl ? `image_url ${q.imageUrl}: ` : ''}${err.message}`);
    throw err;
  }
  return q.embedding!;
}

/** Indices whose searchAndReconstruct was refused ("not implemented"): searched the plain way since. */
const noSearchAndReconstruct = new WeakSet<NativeIndex>();

type Found = SearchResult & { vectors?: Float32Array; keep?: Int32Array };

/**
 * The search for a deduplicating query. Up to DEDUP_NEIGHBOURS results: searchAndDedup, the search
 * and the near-duplicate rule in one native job (`keep` set). Beyond: faiss' search_and_reconstruct
 * (the result vectors decoded from the codes the search has already read, off the JS thread), and
 * dedupPositions runs on them. Where the index cannot reconstruct: a plain search, and the vectors
 * come from reconstruct(id) afterwards. All give the same ids and distances.
 */
export async function searchWithVectors(index: NativeIndex, query: Float32Array, k: number, threads = 1): Promise<Found> {
  // typeof: an addon built before these methods existed lacks them
  if (typeof index.searchAndReconstruct === 'function' && !noSearchAndReconstruct.has(index)) {
    try {
      if (k <= DEDUP_NEIGHBOURS && typeof index.searchAndDedup === 'function') return await index.searchAndDedup(query, k, threads, DEDUP_THRESHOLD);
      return await index.searchAndReconstruct(query, 1, k, threads);
    } catch (err) {
      if (!/not implemented/i.test((err as Error).message)) throw err;
      noSearchAndReconstruct.add(index);
    }
  }
  return index.search(query, 1, k, threads);
}

/**
 * Result vectors, L2-normalised (zero rows stay zero). `reconstruct` runs on the JS thread; on an
 * IVF index without a direct map faiss finds each id by scanning the inverted lists' ids, which
 * grows with the index size (see the README).
 */
function resultVectors(index: NativeIndex, ids: readonly number[], given?: Float32Array): Float32Array {
  const d = index.d;
  const out = new Float32Array(ids.length * d);
  ids.forEach((id, r) => {
    const v = given ? given.subarray(r * d, (r + 1) * d) : index.reconstruct(id);
    let s = 0;
    for (let j = 0; j < d; j++) s += v[j]! * v[j]!;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < d; j++) out[r * d + j] = v[j]! * inv;
  });
  return out;
}

/** Neighbours looked at per result when linking near duplicates (all of them up to this many results). */
export const DEDUP_NEIGHBOURS = 256;

/**
 * Keeps, of every group of results linked by inner product > threshold (connected components of
 * that graph, seeded in rank order), only the best-ranked one. Returns the kept positions. The
 * similarity graph comes from an exact faiss search of the results against themselves, off the JS
 * thread (BLAS); beyond DEDUP_NEIGHBOURS results each links to its DEDUP_NEIGHBOURS nearest only,
 * which splits a group only if some member has more than that many near duplicates, none of them
 * linked to the rest.
 */
export async function dedupPositions(vectors: Float32Array, n: number, d: number, threshold = DEDUP_THRESHOLD): Promise<number[]> {
  if (n * n * d <= SMALL_DEDUP_WORK) return linkComponents(n, smallSimilarityLinks(vectors, n, d, threshold));
  const k = Math.min(n, DEDUP_NEIGHBOURS);
  const flat = createIndex(d, 'Flat', 'ip');
  let found;
  try {
    await flat.add(vectors, n, 1);
    found = await flat.search(vectors, n, k, 1);
  } finally {
    flat.dispose();
  }
  const links: number[][] = Array.from({ length: n }, () => []);
  for (let a = 0; a < n; a++) {
    for (let j = 0; j < k; j++) {
      const b = found.labels[a * k + j]!;
      if (b < 0 || b === a || !(found.distances[a * k + j]! > threshold)) continue;
      links[a]!.push(b);
      links[b]!.push(a);
    }
  }
  return linkComponents(n, links);
}

/**
 * Up to this many multiply-adds (n x n x d) the pairs are scored right here, on the JS thread; above
 * it faiss does it off the thread. 40 results x 512 dims (0.8 M) took 0.54 ms of the JS thread here
 * against 0.19 ms through faiss (BLAS), nearly all of it off the thread: under load the JS thread
 * is what saturates first.
 */
const SMALL_DEDUP_WORK = 200_000;

function smallSimilarityLinks(v: Float32Array, n: number, d: number, threshold: number): number[][] {
  const links: number[][] = Array.from({ length: n }, () => []);
  for (let a = 0; a < n; a++) {
    for (let b = a + 1; b < n; b++) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += v[a * d + j]! * v[b * d + j]!;
      if (dot > threshold) {
        links[a]!.push(b);
        links[b]!.push(a);
      }
    }
  }
  return links;
}

/** Connected components seeded in rank order; the seed (best-ranked member) of each is kept. */
function linkComponents(n: number, links: number[][]): number[] {
  const seen = new Uint8Array(n);
  const kept: number[] = [];
  for (let seed = 0; seed < n; seed++) {
    if (seen[seed]) continue;
    seen[seed] = 1;
    kept.push(seed);
    const stack = [seed];
    while (stack.length) {
      for (const b of links[stack.pop()!]!) {
        if (seen[b]) continue;
        seen[b] = 1;
        stack.push(b);
      }
    }
  }
  return kept;
}

/**
 * Metadata of the ids, with clip-retrieval's `image` (base64 JPEG of a local image_path) added.
 * `fetched`: rows already read for this query (by the safe-mode filter), used instead of reading
 * them again; they may hold more columns than `columns`, which are left out.
 */
export async function metadataFor(
  store: MetadataSource,
  ids: readonly number[],
  columns: readonly string[],
  fetched?: ReadonlyMap<number, MetadataRow>,
): Promise<Map<number, MetadataRow & { image?: string }>> {
  const rows = fetched ? pickRows(fetched, ids, columns) : await store.get(ids, columns);
  await Promise.all(
    [...rows.values()].map(async (row) => {
      const p = row.image_path;
      if (typeof p !== 'string' || !isAbsolute(p)) return;
      try {
        if (!(await stat(p)).isFile()) return;
        (row as { image?: string }).image = (await sharp(await readFile(p)).jpeg().toBuffer()).toString('base64');
      } catch {
        // not a readable image: no `image` field, as when the path does not exist
      }
    }),
  );
  return rows;
}

/** The rows of `ids` present in `rows`, cut to `columns` (those present). */
function pickRows(rows: ReadonlyMap<number, MetadataRow>, ids: readonly number[], columns: readonly string[]): Map<number, MetadataRow> {
  const out = new Map<number, MetadataRow>();
  for (const id of ids) {
    const all = rows.get(id);
    if (!all) continue;
    const row: MetadataRow = {};
    for (const c of columns) if (c in all) row[c] = all[c]!;
    out.set(id, row);
  }
  return out;
}

export async function runKnn(q: KnnQuery, ctx: KnnContext): Promise<KnnResult[]> {
  const { metrics } = ctx;
  const started = performance.now();
  const vector = await queryVector(q, ctx);
  const index = (q.modality === 'image' ? q.index.image : q.index.text)!;
  const k = Math.min(q.numResultIds, index.ntotal);
  if (k === 0) return [];
  const found: Found = await metrics.time('knn_index_time', () =>
    ctx.searchThreads.run(index, (threads) => (q.deduplicate ? searchWithVectors(index, vector, k, threads) : index.search(vector, 1, k, threads))),
  );
  let ids: number[] = [];
  let sims: number[] = [];
  for (let i = 0; i < k; i++) {
    const id = found.labels[i]!;
    if (id < 0) break;
    ids.push(id);
    sims.push(found.distances[i]!);
  }
  if (q.deduplicate && ids.length > 1) {
    // found.keep: searchAndDedup applied the rule in the search's job (its time is in knn_index_time)
    const keep = found.keep ? Array.from(found.keep) : await metrics.time('dedup_time', () => dedupPositions(resultVectors(index, ids, found.vectors), ids.length, index.d));
    ids = keep.map((p) => ids[p]!);
    sims = keep.map((p) => sims[p]!);
  }
  // Safe mode reads the rows of every result, so it reads them whole, once: the metadata of the
  // first num_images comes from the same read (one lookup per id instead of two).
  let fetched: Map<number, MetadataRow> | undefined;
  if (q.useSafetyModel && q.index.metadata.columns.includes(NSFW_COLUMN)) {
    const columns = q.index.columns.includes(NSFW_COLUMN) ? q.index.columns : [...q.index.columns, NSFW_COLUMN];
    const tags = (fetched = await metrics.time('safety_time', () => q.index.metadata.get(ids, columns)));
    const keep = ids.map((id, p) => (String(tags.get(id)?.[NSFW_COLUMN] ?? '').toUpperCase() === 'NSFW' ? -1 : p)).filter((p) => p >= 0);
    ids = keep.map((p) => ids[p]!);
    sims = keep.map((p) => sims[p]!);
  }
  const seen = new Set<number>();
  const results: KnnResult[] = [];
  ids.forEach((id, p) => {
    if (seen.has(id)) return;
    seen.add(id);
    results.push({ id, similarity: sims[p]! });
  });
  const head = results.slice(0, q.numImages);
  const meta = await metrics.time('metadata_get_time', () => metadataFor(q.index.metadata, head.map((r) => r.id), q.index.columns, fetched));
  for (let i = 0; i < head.length; i++) {
    const m = meta.get(head[i]!.id);
    if (m) results[i] = { ...m, id: head[i]!.id, similarity: head[i]!.similarity };
  }
  metrics.step('full_knn_request_time', (performance.now() - started) / 1000);
  return results;
}

export function parseMetadataRequest(body: unknown, indices: Map<string, ServedIndex>, maxIds: number): { index: ServedIndex; ids: number[] } {
  const b = asObject(body);
  const index = indexByName(indices, b);
  if (!Array.isArray(b.ids) || !b.ids.every((x) => typeof x === 'number' && Number.isInteger(x))) throw new BadRequest('ids must be a list of integers');
  if (b.ids.length > maxIds) throw new BadRequest(`ids has ${b.ids.length} entries; at most ${maxIds} per request`);
  return { index, ids: b.ids as number[] };
}

export async function runMetadata(index: ServedIndex, ids: readonly number[], metrics: Metrics): Promise<Array<{ id: number; metadata: Record<string, unknown> }>> {
  if (ids.length === 0) return [];
  const rows = await metrics.time('metadata_get_time', () => metadataFor(index.metadata, ids, index.columns));
  return ids.map((id) => ({ id, metadata: rows.get(id) ?? {} }));
}
