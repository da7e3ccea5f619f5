// One index from one folder of .npy embeddings (autofaiss build_index, our way): choose the key
// under the budget, train on a random sample, add every vector by streaming the files, tune the
// search parameters on held-out queries against exact search, write the index and its
// index_infos json. Also: add new partitions to an index built before, without retraining.
import { readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { writeFileAtomic } from '../../lib/atomic-file.ts';
import { createFloatMatrix, createIndex, loadFaiss, readIndex, writeIndexAtomic, type Metric, type NativeIndex, type TrainingOptions } from '../../lib/faiss/index.ts';
import { estimatedIndexSize, formatMemory, selectIndexKey } from './key-selection.ts';
import { describeFiles, exactTopK, forEachRow, gatherRows, listEmbeddings, measureLatency, reconstructionErrorPercent, sampleIds, streamVectors, type EmbeddingSet } from './score.ts';
import { DEFAULT_TARGET_RECALL, tuneIndex } from './tune.ts';

export interface BuildOptions {
  embeddingsFolder: string;
  indexPath: string;
  infosPath: string;
  /** --max-index-memory-usage, bytes. */
  budget: number;
  /** --current-memory-available, bytes. */
  currentMemory: number;
  maxQueryMs: number;
  threads: number;
  indexKey?: string | null;
  /** Skip tuning and use this ParameterSpace string (autofaiss index_param). */
  indexParam?: string | null;
  metric?: Metric;
  memoryMappable?: boolean;
  targetRecall?: number;
  /** Held-out queries for tuning and the infos' speed test. */
  tuningQueries?: number;
  seed?: number;
  log: (msg: string) => void;
}

/** autofaiss' index_infos fields, in its order. */
export interface IndexInfos {
  index_key: string;
  index_param: string;
  index_path: string;
  'size in bytes': number;
  avg_search_speed_ms: number;
  '99p_search_speed_ms': number;
  'reconstruction error %': number;
  'nb vectors': number;
  'vectors dimension': number;
  'compression ratio': number;
}

/** Sidecar listing the npy files in id order, so new partitions can be appended later. */
export interface PartsManifest {
  index_key: string;
  parts: { file: string; rows: number }[];
}

export function partsPath(indexPath: string): string {
  return indexPath.replace(/\.index$/, '') + '.parts.json';
}

/** Training caps: OPQ at faiss' defaults (50 outer x 40 first PQ iterations) takes >10 min on Debian's generic build at 20k x 64. */
export const TRAINING_CAPS: TrainingOptions = { opqNiter: 10, opqNiterPq: 4, opqMaxTrainPoints: 65536, polysemousTraining: false };

function nlistOf(key: string): number {
  const g = /IVF(\d+)/.exec(key);
  if (g) return Number(g[1]);
  const imi = /IMI(\d+)x(\d+)/.exec(key);
  return imi ? 2 ** (Number(imi[1]) * Number(imi[2])) : 0;
}

/** autofaiss' training-memory estimate for n training vectors (reference 2.6). */
export function trainingMemory(key: string, n: number, d: number): number {
  const vectors = 4 * d * n;
  const c = nlistOf(key);
  let extra = 4 * c * d;
  const h = /IVF\d+_HNSW(\d+)/.exec(key);
  if (h) extra += c * Number(h[1]) * 8 + 4 * c * d;
  const opq = /^OPQ(\d+)_(\d+)/.exec(key);
  if (opq) {
    const m = Number(opq[1]);
    const y = Number(opq[2]);
    const np = Math.min(65536, n);
    const D = Math.max(d, y);
    extra += 4 * (y * np + y * np + D * np + 4 * D * D) + m * np;
  }
  return 1.5 * vectors + extra;
}

/** autofaiss get_optimal_train_size: 100 points per list, down to 31 when memory is short. */
export function trainSize(key: string, n: number, d: number, memory: number): number {
  const c = nlistOf(key);
  if (c === 0) return 0;
  const ppc = Math.min(100, Math.max(31, memory / trainingMemory(key, 100, d)));
  return Math.min(Math.round(ppc * c), n);
}

function rss(): string {
  return formatMemory(process.memoryUsage().rss);
}

export interface BuildResult {
  infos: IndexInfos;
  set: EmbeddingSet;
  trainSeconds: number;
  addSeconds: number;
  peakRss: number;
}

/** Adds every vector of `set` to `index` in batches, logging progress. */
async function addAll(index: NativeIndex, set: EmbeddingSet, batchRows: number, threads: number, log: (m: string) => void, label: string): Promise<void> {
  let done = 0;
  let lastLog = performance.now();
  const started = performance.now();
  for await (const chunk of streamVectors(set, batchRows)) {
    await index.add(chunk.data, chunk.rows, threads);
    done += chunk.rows;
    if (performance.now() - lastLog > 2000 || done === set.total) {
      lastLog = performance.now();
      const s = (performance.now() - started) / 1000;
      log(`${label}: added ${done}/${set.total} vectors (${(done / Math.max(s, 1e-3)).toFixed(0)}/s, rss ${rss()})`);
    }
  }
}

async function tuningSet(set: EmbeddingSet, count: number, seed: number, exclude?: ReadonlySet<number>): Promise<{ ids: number[]; x: Float32Array }> {
  const ids = sampleIds(set.total, count, seed, exclude);
  return { ids, x: await gatherRows(set, ids) };
}

async function finishIndex(index: NativeIndex, key: string, set: EmbeddingSet, opts: BuildOptions, queries: Float32Array, nq: number, indexParam: string): Promise<IndexInfos> {
  const speedQ = Math.min(nq, 1000);
  const lat = await measureLatency(index, queries, speedQ, 40, { maxSearches: 2000, maxMs: Math.min(10_000, 200 + speedQ * 5), threads: opts.threads });
  const recon = reconstructionErrorPercent(index, queries, Math.min(nq, 1000));
  await writeIndexAtomic(index, opts.indexPath);
  const size = (await stat(opts.indexPath)).size;
  const infos: IndexInfos = {
    index_key: key,
    index_param: indexParam,
    index_path: opts.indexPath,
    'size in bytes': size,
    avg_search_speed_ms: lat.avgMs,
    '99p_search_speed_ms': lat.p99Ms,
    'reconstruction error %': recon,
    'nb vectors': index.ntotal,
    'vectors dimension': index.d,
    'compression ratio': (4 * index.ntotal * index.d) / size,
  };
  await writeFileAtomic(opts.infosPath, JSON.stringify(infos, null, 2) + '\n');
  return infos;
}

export async function buildIndex(opts: BuildOptions): Promise<BuildResult> {
  const { log, threads } = opts;
  const metric = opts.metric ?? 'ip';
  const seed = opts.seed ?? 0;
  let peak = process.memoryUsage().rss;
  const sampleRss = () => (peak = Math.max(peak, process.memoryUsage().rss));
  const set = await listEmbeddings(opts.embeddingsFolder);
  if (set.total === 0) throw new Error(`${opts.embeddingsFolder}: no .npy embeddings with rows`);
  const { total: n, d } = set;
  if (opts.budget > 0.9 * opts.currentMemory) {
    throw new Error(`--max-index-memory-usage ${formatMemory(opts.budget)} leaves under 10% of --current-memory-available ${formatMemory(opts.currentMemory)} for building; lower it or raise --current-memory-available`);
  }
  let key: string;
  if (opts.indexKey) {
    key = opts.indexKey;
    log(`${n} vectors x ${d} in ${set.files.length} files; index key ${key} (forced), estimated ${formatMemory(Math.max(0, estimatedIndexSize(key, n, d)))}`);
  } else {
    const choice = selectIndexKey({ n, d, budget: opts.budget, memoryMappable: opts.memoryMappable, float16: set.float16 && loadFaiss().fastFp16Scan });
    key = choice.key;
    log(`${n} vectors x ${d} in ${set.files.length} files; index key ${key} (${choice.rule}), estimated ${formatMemory(choice.estimatedSize)} <= budget ${formatMemory(opts.budget)}`);
  }
  const index = createIndex(d, key, metric);
  try {
    index.configureTraining(TRAINING_CAPS);
    // training on a random sample: autofaiss takes the first rows, biased when files are ordered
    let trainSeconds = 0;
    let trainIds: number[] = [];
    if (!index.isTrained) {
      const want = Math.max(trainSize(key, n, d, opts.currentMemory), Math.min(n, 1000));
      const need = trainingMemory(key, want, d);
      if (need > opts.currentMemory) throw new Error(`training ${key} on ${want} vectors needs about ${formatMemory(need)}, more than --current-memory-available ${formatMemory(opts.currentMemory)}`);
      trainIds = sampleIds(n, want, seed + 1);
      // native memory: a LAION-scale sample (4M x 512 floats) exceeds Node's 4 GiB array limit
      const x = createFloatMatrix(want, d);
      await forEachRow(set, trainIds, (k, row) => x.set(k, row));
      sampleRss();
      log(`training ${key} on ${want} random vectors (${formatMemory(want * d * 4)}, rss ${rss()})`);
      const t = performance.now();
      try {
        await index.train(x, want, threads);
      } finally {
        x.release();
      }
      trainSeconds = (performance.now() - t) / 1000;
      sampleRss();
      log(`trained in ${trainSeconds.toFixed(1)} s`);
    }
    const batchRows = Math.max(1, Math.min(65536, Math.floor(Math.min(opts.currentMemory - opts.budget, 1e9) / (4 * d))));
    const t = performance.now();
    await addAll(index, set, batchRows, threads, (m) => {
      sampleRss();
      log(m);
    }, 'add');
    const addSeconds = (performance.now() - t) / 1000;
    // held-out queries: rows not used for training
    const nq = Math.min(opts.tuningQueries ?? 500, n);
    const exclude = trainIds.length < n - nq ? new Set(trainIds) : undefined;
    const q = await tuningSet(set, nq, seed + 2, exclude);
    let indexParam = opts.indexParam ?? '';
    if (opts.indexParam != null) {
      if (indexParam) index.setParameters(indexParam);
    } else {
      log(`exact search for ${nq} held-out queries (ground truth for tuning)`);
      const truth = await exactTopK(set, q.x, nq, 10, { metric, threads });
      sampleRss();
      const tuned = await tuneIndex(index, key, q.x, truth, { maxQueryMs: opts.maxQueryMs, targetRecall: opts.targetRecall ?? DEFAULT_TARGET_RECALL, threads, log });
      indexParam = tuned.indexParam;
      if (tuned.recallAt10 !== null) log(`recall@10 ${tuned.recallAt10.toFixed(3)} at ${indexParam}`);
    }
    const infos = await finishIndex(index, key, set, opts, q.x, nq, indexParam);
    const manifest: PartsManifest = { index_key: key, parts: set.files.map((f) => ({ file: relative(opts.embeddingsFolder, f.path), rows: f.rows })) };
    await writeFileAtomic(partsPath(opts.indexPath), JSON.stringify(manifest, null, 2) + '\n');
    sampleRss();
    return { infos, set, trainSeconds, addSeconds, peakRss: peak };
  } finally {
    index.dispose();
  }
}

/**
 * Appends the .npy files of `embeddingsFolder` that the index does not hold yet (by its parts
 * manifest), in path order, without retraining; keeps the index's tuned parameters.
 */
export async function addNewPartitions(opts: BuildOptions): Promise<{ infos: IndexInfos; added: string[] }> {
  const { log, threads } = opts;
  let manifest: PartsManifest;
  try {
    manifest = JSON.parse(await readFile(partsPath(opts.indexPath), 'utf8')) as PartsManifest;
  } catch (err) {
    throw new Error(`cannot add partitions to ${opts.indexPath}: its manifest ${partsPath(opts.indexPath)} is missing or unreadable (${(err as Error).message}); build the index first`);
  }
  const prevInfos = JSON.parse(await readFile(opts.infosPath, 'utf8')) as IndexInfos;
  const rel = (path: string) => relative(opts.embeddingsFolder, path);
  const known = new Set(manifest.parts.map((p) => p.file));
  const current = await listEmbeddings(opts.embeddingsFolder);
  for (const p of manifest.parts) {
    const f = current.files.find((x) => rel(x.path) === p.file);
    if (!f || f.rows !== p.rows) throw new Error(`${p.file} was indexed with ${p.rows} rows but now ${f ? `has ${f.rows}` : 'is missing'}: partitions already indexed must not change; rebuild instead`);
  }
  let fresh = current.files.filter((f) => !known.has(rel(f.path)));
  const index = await readIndex(opts.indexPath);
  try {
    const before = index.ntotal;
    let expected = manifest.parts.reduce((a, p) => a + p.rows, 0);
    // killed after the index was written but before its manifest: the first new files are in it
    while (before > expected && fresh.length > 0 && expected + fresh[0]!.rows <= before) {
      manifest.parts.push({ file: rel(fresh[0]!.path), rows: fresh[0]!.rows });
      expected += fresh[0]!.rows;
      fresh = fresh.slice(1);
    }
    if (before !== expected) throw new Error(`${opts.indexPath} holds ${before} vectors but its manifest lists ${expected}; rebuild it`);
    if (fresh.length === 0) {
      log(`no new partitions under ${opts.embeddingsFolder}; ${opts.indexPath} is up to date (${before} vectors)`);
      await writeFileAtomic(partsPath(opts.indexPath), JSON.stringify(manifest, null, 2) + '\n');
      return { infos: prevInfos, added: [] };
    }
    const set = await describeFiles(fresh.map((f) => f.path), before);
    if (set.d !== index.d) throw new Error(`new partitions have dimension ${set.d}, the index ${index.d}`);
    log(`adding ${fresh.length} new partitions (${set.total} vectors) to ${opts.indexPath} (${before} vectors, ${prevInfos.index_key})`);
    await addAll(index, set, 65536, threads, log, 'add');
    const all = await describeFiles([...manifest.parts.map((p) => join(opts.embeddingsFolder, p.file)), ...fresh.map((f) => f.path)]);
    const nq = Math.min(opts.tuningQueries ?? 500, all.total);
    const q = await tuningSet(all, nq, (opts.seed ?? 0) + 2);
    const infos = await finishIndex(index, manifest.index_key, all, opts, q.x, nq, prevInfos.index_param);
    const next: PartsManifest = { index_key: manifest.index_key, parts: all.files.map((f) => ({ file: rel(f.path), rows: f.rows })) };
    await writeFileAtomic(partsPath(opts.indexPath), JSON.stringify(next, null, 2) + '\n');
    return { infos, added: fresh.map((f) => f.path) };
  } finally {
    index.dispose();
  }
}
