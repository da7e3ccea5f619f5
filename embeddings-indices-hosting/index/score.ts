// Measuring an index against exact search: the embedding files as a stream, random held-out query
// rows, exact top-k by streaming every vector through a flat index chunk by chunk (memory stays one
// chunk), recall@k, and single-query latency. Used by tuning (build) and by `run.ts score`.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createIndex, type Metric, type NativeIndex } from '../../lib/faiss/index.ts';
import { readNpyHeader, readNpyRows } from '../../lib/npy.ts';
import { seededRandom } from '../../lib/random.ts';

export interface EmbeddingFile {
  path: string;
  rows: number;
  /** Global id of the file's first row. */
  start: number;
}

export interface EmbeddingSet {
  files: EmbeddingFile[];
  total: number;
  d: number;
  /** Every file holds float16 (as inference writes them): float16 index codes keep them exactly. */
  float16: boolean;
}

async function walkNpy(dir: string, out: string[]): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walkNpy(p, out);
    else if (e.name.endsWith('.npy') && !e.name.startsWith('.tmp-')) out.push(p);
  }
}

/** The .npy files under `folder` (recursive), in plain string order of their paths: ids follow it. */
export async function listEmbeddings(folder: string): Promise<EmbeddingSet> {
  const paths: string[] = [];
  await walkNpy(folder, paths);
  paths.sort();
  return describeFiles(paths);
}

export async function describeFiles(paths: readonly string[], firstId = 0): Promise<EmbeddingSet> {
  const files: EmbeddingFile[] = [];
  let total = firstId;
  let d = 0;
  let float16 = true;
  for (const path of paths) {
    const h = await readNpyHeader(path);
    if (h.rows === 0) continue; // as embedding-reader: empty partitions carry no ids
    if (h.dtype !== 'float16') float16 = false;
    if (d === 0) d = h.cols;
    else if (h.cols !== d) throw new Error(`${path}: dimension ${h.cols} differs from ${d} in the files before it`);
    files.push({ path, rows: h.rows, start: total });
    total += h.rows;
  }
  return { files, total: total - firstId, d, float16: float16 && files.length > 0 };
}

/** `count` distinct ids from [0, total) minus `exclude`, uniformly at random, sorted. */
export function sampleIds(total: number, count: number, seed: number, exclude?: ReadonlySet<number>): number[] {
  const available = total - (exclude?.size ?? 0);
  const want = Math.min(count, available);
  const rand = seededRandom(seed);
  if (want >= available * 0.5) {
    // dense: shuffle-select over the whole range
    const all: number[] = [];
    for (let i = 0; i < total; i++) if (!exclude?.has(i)) all.push(i);
    for (let i = 0; i < want; i++) {
      const j = i + Math.floor(rand() * (all.length - i));
      [all[i], all[j]] = [all[j]!, all[i]!];
    }
    return all.slice(0, want).sort((a, b) => a - b);
  }
  const picked = new Set<number>();
  while (picked.size < want) {
    const id = Math.floor(rand() * total);
    if (!exclude?.has(id)) picked.add(id);
  }
  return [...picked].sort((a, b) => a - b);
}

/** Reads the rows with these (sorted) global ids into one array, streaming the files once. */
export async function gatherRows(set: EmbeddingSet, ids: readonly number[]): Promise<Float32Array> {
  const d = set.d;
  const out = new Float32Array(ids.length * d);
  await forEachRow(set, ids, (k, row) => out.set(row, k * d));
  return out;
}

/** Calls `sink(k, row)` for the k-th of these (sorted) global ids, streaming the files once. */
export async function forEachRow(set: EmbeddingSet, ids: readonly number[], sink: (k: number, row: Float32Array) => void): Promise<void> {
  const d = set.d;
  let k = 0;
  for (const f of set.files) {
    if (k >= ids.length) break;
    if (ids[k]! >= f.start + f.rows) continue;
    for await (const chunk of readNpyRows(f.path)) {
      const chunkStart = f.start + chunk.start;
      while (k < ids.length && ids[k]! < chunkStart + chunk.rows) {
        const r = ids[k]! - chunkStart;
        sink(k, chunk.data.subarray(r * d, (r + 1) * d));
        k++;
      }
      if (k >= ids.length) break;
    }
  }
}

/** Every vector in id order, in chunks of at most `chunkRows`, float32. */
export async function* streamVectors(set: EmbeddingSet, chunkRows: number): AsyncGenerator<{ start: number; rows: number; data: Float32Array }> {
  for (const f of set.files) {
    for await (const c of readNpyRows(f.path, { chunkRows })) yield { start: f.start + c.start, rows: c.rows, data: c.data };
  }
}

export interface TopK {
  nq: number;
  k: number;
  labels: Float64Array;
  distances: Float32Array;
}

/**
 * Exact top-k of each query over all vectors: each chunk goes into a flat index of the same metric,
 * the chunk's top-k is merged into the running one. Memory: one chunk + nq*k.
 */
export async function exactTopK(
  set: EmbeddingSet,
  queries: Float32Array,
  nq: number,
  k: number,
  options: { metric?: Metric; threads?: number; chunkRows?: number; onChunk?: (rowsDone: number) => void } = {},
): Promise<TopK> {
  const metric = options.metric ?? 'ip';
  const better = metric === 'ip' ? (a: number, b: number) => a > b : (a: number, b: number) => a < b;
  const labels = new Float64Array(nq * k).fill(-1);
  const distances = new Float32Array(nq * k).fill(metric === 'ip' ? -Infinity : Infinity);
  const chunkRows = options.chunkRows ?? Math.max(1000, Math.floor((64 << 20) / (4 * set.d)));
  let done = 0;
  for await (const chunk of streamVectors(set, chunkRows)) {
    const flat = createIndex(set.d, 'Flat', metric);
    try {
      await flat.add(chunk.data, chunk.rows, options.threads);
      const r = await flat.search(queries, nq, Math.min(k, chunk.rows), options.threads);
      const kc = Math.min(k, chunk.rows);
      const mergedL = new Float64Array(k);
      const mergedD = new Float32Array(k);
      for (let q = 0; q < nq; q++) {
        let a = 0;
        let b = 0;
        for (let i = 0; i < k; i++) {
          const da = distances[q * k + a];
          const db = b < kc && r.labels[q * kc + b]! >= 0 ? r.distances[q * kc + b]! : undefined;
          if (db !== undefined && (a >= k || better(db, da!))) {
            mergedL[i] = r.labels[q * kc + b]! + chunk.start;
            mergedD[i] = db;
            b++;
          } else {
            mergedL[i] = labels[q * k + a]!;
            mergedD[i] = da!;
            a++;
          }
        }
        labels.set(mergedL, q * k);
        distances.set(mergedD, q * k);
      }
    } finally {
      flat.dispose();
    }
    done += chunk.rows;
    options.onChunk?.(done);
  }
  return { nq, k, labels, distances };
}

/** k-recall@k: the share of the exact top-k that the index also returns in its top-k, averaged. */
export function recallAt(k: number, found: Float64Array, foundK: number, truth: TopK): number {
  if (k > foundK || k > truth.k) throw new Error(`recall@${k} needs k >= ${k} results (have ${foundK} found, ${truth.k} exact)`);
  let sum = 0;
  for (let q = 0; q < truth.nq; q++) {
    const exact = new Set<number>();
    for (let i = 0; i < k; i++) {
      const id = truth.labels[q * truth.k + i]!;
      if (id >= 0) exact.add(id);
    }
    if (exact.size === 0) {
      sum += 1;
      continue;
    }
    let hit = 0;
    for (let i = 0; i < k; i++) if (exact.has(found[q * foundK + i]!)) hit++;
    sum += hit / exact.size;
  }
  return sum / truth.nq;
}

export interface Latency {
  avgMs: number;
  p50Ms: number;
  p99Ms: number;
  searches: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const pos = (sorted.length - 1) * p; // numpy's linear interpolation
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** One query per call (what a search service does), cycling the queries, until `maxSearches` or `maxMs`. */
export async function measureLatency(index: NativeIndex, queries: Float32Array, nq: number, k: number, options: { maxSearches?: number; maxMs?: number; threads?: number } = {}): Promise<Latency> {
  const d = index.d;
  const maxSearches = options.maxSearches ?? 2000;
  const maxMs = options.maxMs ?? 10_000;
  const times: number[] = [];
  const started = performance.now();
  for (let i = 0; i < maxSearches && (i === 0 || performance.now() - started < maxMs); i++) {
    const q = i % nq;
    const t = performance.now();
    await index.search(queries.subarray(q * d, (q + 1) * d), 1, k, options.threads);
    times.push(performance.now() - t);
  }
  const sorted = [...times].sort((a, b) => a - b);
  return { avgMs: times.reduce((a, b) => a + b, 0) / Math.max(1, times.length), p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), searches: times.length };
}

/** 100 * mean |decode(encode(q)) - q| / mean |q|; 0 when the index has no standalone codec (autofaiss). */
export function reconstructionErrorPercent(index: NativeIndex, x: Float32Array, n: number): number {
  const back = index.codecRoundTrip(x, n);
  if (!back) return 0;
  const d = index.d;
  let errSum = 0;
  let normSum = 0;
  for (let r = 0; r < n; r++) {
    let e = 0;
    let s = 0;
    for (let j = 0; j < d; j++) {
      const v = x[r * d + j]!;
      e += (back[r * d + j]! - v) ** 2;
      s += v * v;
    }
    errSum += Math.sqrt(e);
    normSum += Math.sqrt(s);
  }
  return normSum > 0 ? (100 * errSum) / normSum : 0;
}
