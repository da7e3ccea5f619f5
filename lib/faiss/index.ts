// Typed face of our faiss addon (lib/faiss/addon.cc over Debian's libfaiss-dev 1.7.3). Index files
// are plain faiss files: Python's faiss.read_index opens them.
import { rename, rm } from 'node:fs/promises';
import { tempPathFor } from '../atomic-file.ts';
import { loadAddon } from '../native-addon.ts';

export type Metric = 'ip' | 'l2';

export interface SearchResult {
  /** nq*k scores, row-major (inner product: higher is closer; l2: squared distance). */
  distances: Float32Array;
  /** nq*k ids, -1 where fewer than k results were found. */
  labels: Float64Array;
}

export interface SearchAndReconstructResult extends SearchResult {
  /** nq*k*d floats: each result's vector as the index stores it (decoded codes); NaN rows where the label is -1. */
  vectors: Float32Array;
}

/** Knobs for training that index_factory leaves at faiss' defaults. */
export interface TrainingOptions {
  /** OPQ outer iterations (faiss default 50: very slow on Debian's generic build). */
  opqNiter?: number;
  /** PQ iterations inside each OPQ iteration (default 4). */
  opqNiterPq?: number;
  /** OPQ trains on at most this many vectors (default 65536). */
  opqMaxTrainPoints?: number;
  /** Coarse (IVF) k-means iterations (faiss sets 10 for an IVF's quantiser). */
  kmeansNiter?: number;
  /** k-means subsamples to this many points per centroid (default 256). */
  maxPointsPerCentroid?: number;
  /** PQ sub-quantiser k-means iterations (default 25). */
  pqNiter?: number;
  /** Polysemous training for IVFPQ (default false here; we search with ht=2048 anyway). */
  polysemousTraining?: boolean;
  efConstruction?: number;
}

/** Rows x d floats in native memory (not limited to 4 GiB like a Float32Array in Node 20). */
export interface FloatMatrix {
  readonly rows: number;
  /** Copies whole rows starting at `row`. */
  set(row: number, values: Float32Array): void;
  /** Frees the memory (also freed when garbage-collected). */
  release(): void;
}

export interface NativeIndex {
  readonly ntotal: number;
  readonly d: number;
  readonly metric: Metric | 'other';
  readonly isTrained: boolean;
  train(x: Float32Array | FloatMatrix, n: number, threads?: number): Promise<void>;
  add(x: Float32Array, n: number, threads?: number): Promise<void>;
  /** IVF indices (also behind OPQ): add with the given ids (integers < 2^53) instead of ntotal, ntotal+1, ... */
  addWithIds(x: Float32Array, n: number, ids: Float64Array, threads?: number): Promise<void>;
  /**
   * faiss merge_from: moves every entry of `other` into this index, ids shifted by idOffset (default
   * 0); `other` is left empty. Both must come from the same trained index (same quantizer, codes,
   * OPQ matrix) and, for IVF, be in memory (not memory-mapped).
   */
  mergeFrom(other: NativeIndex, idOffset?: number): Promise<void>;
  search(x: Float32Array, nq: number, k: number, threads?: number): Promise<SearchResult>;
  /**
   * faiss' search_and_reconstruct, off the JS thread: the same results as search() plus the result
   * vectors. IVF indices decode them from the codes the scan has just read (no id lookup); others
   * search, then reconstruct each id. Rejects where the index cannot reconstruct (e.g. IDMap,Flat).
   * Exact distance ties between different ids may come out in another order than search()'s on IVF
   * indices (faiss breaks ties by the label, which is a list/offset pair during this scan).
   */
  searchAndReconstruct(x: Float32Array, nq: number, k: number, threads?: number): Promise<SearchAndReconstructResult>;
  /**
   * One query's searchAndReconstruct plus the back end's near-duplicate rule on its results, in
   * one job off the JS thread: `keep` holds the positions (among the results before the first -1
   * label) kept when results whose L2-normalised vectors have inner product > threshold are linked
   * and only the first position of each connected component stays. Rejects as searchAndReconstruct.
   */
  searchAndDedup(x: Float32Array, k: number, threads: number, threshold: number): Promise<SearchResult & { keep: Int32Array }>;
  /**
   * Inner-product IVF-SQfp16 indices (with the addon's float16 scanner): an 8-bit copy of the lists,
   * memory-mapped from copyPath (written there first when missing or stale against indexPath), is
   * scanned first and the float16 distance computed only where the 8-bit score, widened by its
   * largest error, could enter the results: the same results bit for bit, about half the bytes read.
   * Resolves "attached", "built", or "unsupported: <why>" (nothing changed).
   */
  attachSq8Copy(copyPath: string, indexPath: string): Promise<string>;
  write(path: string): Promise<void>;
  /** ParameterSpace syntax: "nprobe=16,efSearch=32,ht=2048". */
  setParameters(params: string): void;
  /**
   * IVF indices: with `on` (the default), the threads given to a search split each query's probed
   * lists among them (faiss parallel_mode 1) rather than taking whole queries, so one query searched
   * with 2+ threads finishes sooner; with 1 thread nothing changes. Returns false (and changes
   * nothing) for other indices. Batches of many queries are faster with it off (faiss' default).
   */
  splitQueriesOverLists(on?: boolean): boolean;
  configureTraining(options: TrainingOptions): void;
  reconstruct(id: number, n?: number): Float32Array;
  /** sa_decode(sa_encode(x)), or null when the index has no standalone codec (HNSW, IVF with HNSW...). */
  codecRoundTrip(x: Float32Array, n: number): Float32Array | null;
  /** The structure, e.g. IndexIVF(nlist=1024,nprobe=1,metric=ip,quantizer=IndexFlat(metric=ip)). */
  describe(): string;
  dispose(): void;
}

interface FaissAddon {
  FaissIndex: {
    factory(d: number, key: string, metric: Metric): NativeIndex;
    read(path: string, mmap: boolean): Promise<NativeIndex>;
  };
  FloatMatrix: new (rows: number, d: number) => FloatMatrix;
  setInterrupt(on: boolean): void;
  setBlasThreads(n: number): void;
  maxThreads(): number;
  faissVersion: string;
  /**
   * Which float distance kernels faiss runs (lib/faiss/distance-kernels.cc): "avx2" (ours, AVX2 +
   * FMA) or "generic" (Debian's scalar ones: a CPU without AVX2, or CAH_FAISS_KERNELS=generic).
   */
  distanceKernels: 'avx2' | 'generic';
  /** Whether IVF-SQfp16 lists are scanned by our AVX2 + F16C kernel (lib/faiss/ivf-sq-fp16.cc). */
  fastFp16Scan: boolean;
}

export const FAISS_APT_PACKAGES = ['libfaiss-dev', 'libopenblas-dev'];

let cached: FaissAddon | undefined;

/** The addon; throws one line naming the packages when it is not built here. */
export function loadFaiss(): FaissAddon {
  if (cached) return cached;
  // libgomp reads this when the addon loads it. Its default (spin before sleeping) makes faiss'
  // many short parallel loops crawl when the cores are shared: PQ training 41 s -> 8 s here on 2
  // busy cores. Set OMP_WAIT_POLICY=ACTIVE yourself on a dedicated machine if it measures faster.
  process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
  const r = loadAddon<FaissAddon>('faiss');
  if (!r.addon) {
    throw new Error(`faiss is not available: ${r.reason}. Install it with: apt-get install ${FAISS_APT_PACKAGES.join(' ')} && npm run build:native (or bash .ci/install)`);
  }
  cached = r.addon;
  return cached;
}

export function faissAvailable(): { ok: true } | { ok: false; reason: string } {
  try {
    loadFaiss();
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

export function createIndex(d: number, key: string, metric: Metric = 'ip'): NativeIndex {
  return loadFaiss().FaissIndex.factory(d, key, metric);
}

export function createFloatMatrix(rows: number, d: number): FloatMatrix {
  return new (loadFaiss().FloatMatrix)(rows, d);
}

/** Reads a faiss file; with mmap the inverted lists stay on disk (IO_FLAG_MMAP | IO_FLAG_READ_ONLY). */
export async function readIndex(path: string, options: { mmap?: boolean } = {}): Promise<NativeIndex> {
  try {
    return await loadFaiss().FaissIndex.read(path, options.mmap ?? false);
  } catch (err) {
    throw new Error(`cannot read faiss index ${path}: ${(err as Error).message.split('\n')[0]}`);
  }
}

/** Writes under a temporary name in the same folder, then renames. */
export async function writeIndexAtomic(index: NativeIndex, path: string): Promise<void> {
  const tmp = tempPathFor(path);
  try {
    await index.write(tmp);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export class InterruptedError extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
  }

  /** The shell's convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM). */
  get exitCode(): number {
    return this.signal === 'SIGINT' ? 130 : 143;
  }
}

/**
 * Runs `fn` with SIGINT/SIGTERM turned into a faiss interrupt: a training run in progress stops at
 * its next check and `fn` rejects with InterruptedError. A second signal exits at once.
 */
export async function interruptibleBySignals<T>(fn: () => Promise<T>): Promise<T> {
  const faiss = loadFaiss();
  let caught: NodeJS.Signals | null = null;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (caught) process.exit(signal === 'SIGINT' ? 130 : 143);
    caught = signal;
    faiss.setInterrupt(true);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const result = await fn();
    if (caught) throw new InterruptedError(caught);
    return result;
  } catch (err) {
    if (caught) throw new InterruptedError(caught);
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    faiss.setInterrupt(false);
  }
}
