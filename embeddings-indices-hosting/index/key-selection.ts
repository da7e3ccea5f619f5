// Which faiss index fits a memory budget: autofaiss' selection rules (reference/autofaiss.md 2.1-2.5),
// written from the rules, plus one correction: autofaiss filters the quantised keys on the codes
// alone (N*(m+8) <= budget) and so can pick an index larger than the budget once the centroids, the
// HNSW coarse quantiser and the OPQ matrix are counted; we keep a key only when its whole estimated
// size fits. When nothing fits, the error names the smallest budget that would work (autofaiss
// returns an empty list and stops without a word: its issue #118).

export interface KeySelectionInput {
  /** Number of vectors. */
  n: number;
  /** Dimension. */
  d: number;
  /** --max-index-memory-usage in bytes. */
  budget: number;
  /** Restrict to IVF families (their inverted lists can be memory-mapped). */
  memoryMappable?: boolean;
  /**
   * The vectors are float16 (every embeddings file is) and this machine scans float16 IVF lists
   * fast (lib/faiss/ivf-sq-fp16.cc): where we prefer IVF-Flat, IVF-SQfp16 holds the same values in
   * half the bytes, with the same search results.
   */
  float16?: boolean;
}

export class NoKeyFitsError extends Error {
  constructor(
    message: string,
    readonly smallestBudget: number,
  ) {
    super(message);
  }
}

const UNITS = 'BKMGTPEZ';

/** autofaiss' cast_memory_to_bytes: `<number><unit>[B]`, binary units, "16G" == "16GB" == 16 * 2^30. */
export function parseMemory(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)([bkmgtpez])b?$/i.exec(raw.trim());
  if (!m) throw new Error(`"${raw}" is not a memory size; write e.g. 4G, 512M, 16GB (binary units: 1K = 1024 bytes)`);
  return Math.floor(Number(m[1]) * 1024 ** UNITS.indexOf(m[2]!.toUpperCase()));
}

export function formatMemory(bytes: number): string {
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const unit = UNITS[i]!;
  return i === 0 ? `${bytes}B` : `${v >= 100 ? Math.ceil(v) : Math.ceil(v * 10) / 10}${unit}`;
}

/** IVF list counts by preference (autofaiss get_optimal_nb_clusters). */
export function clusterCounts(n: number): number[] {
  if (n < 1_000_000) {
    const x = 4 * Math.sqrt(n);
    const p = 2 ** Math.round(Math.log2(x));
    return [p, 2 * p, p, Math.round(x)];
  }
  if (n < 10_000_000) return [16384, 65536];
  if (n < 300_000_000) return [65536, 131072, 262144];
  return [131072, 262144, 65536, 1048576];
}

/**
 * From this many vectors on, we prefer IVF-Flat to HNSW whenever the uncompressed vectors fit the
 * budget (autofaiss picks HNSW): on Debian's faiss 1.7.3 an HNSW32 of 1M x 512 took 1.45x
 * autofaiss' build time (its pip faiss 1.15 adds with batched, prefetching distance loops) and gave
 * recall@10 0.82 at the 10 ms bound, where IVF2048,Flat built in 0.41x autofaiss' time and reached
 * 0.999 at 6 ms (README, "1M x 512 against autofaiss"). Below it HNSW builds in seconds and stays.
 */
export const IVF_FLAT_OVER_HNSW_FROM = 1_000_000;

/** Lists of the IVF-Flat we prefer at IVF_FLAT_OVER_HNSW_FROM and more: 2^round(log2(2 sqrt(n))), 2048 at 1M. */
export function preferredFlatLists(n: number): number {
  return 2 ** Math.round(Math.log2(2 * Math.sqrt(n)));
}

/** The IVF key we prefer from IVF_FLAT_OVER_HNSW_FROM vectors on: float16 codes for float16 vectors. */
export function preferredIvfKey(n: number, float16: boolean): string {
  return `IVF${preferredFlatLists(n)},${float16 ? 'SQfp16' : 'Flat'}`;
}

export function ivfFlatKeys(n: number): string[] {
  return clusterCounts(n).map((c) => `IVF${c},Flat`);
}

/** OPQ{m}_{y},IVF{c}[_HNSW32],PQ{m}x8 for every m < d, largest code first (autofaiss 2.4). */
export function quantisedKeys(n: number, d: number): { key: string; m: number }[] {
  const out: { key: string; m: number }[] = [];
  for (const m of [256, 128, 64, 48, 32, 24, 16, 8, 4]) {
    if (m >= d) continue;
    const y = (Math.min(Math.floor(d / m), 6) + 1) * m;
    for (const c of clusterCounts(n)) {
      const coarse = c < 1000 ? `IVF${c}` : `IVF${c}_HNSW32`;
      out.push({ key: `OPQ${m}_${y},${coarse},PQ${m}x8`, m });
    }
  }
  return out;
}

/** autofaiss' IndexMetadata.estimated_index_size_in_bytes; -1 for keys it does not know. */
export function estimatedIndexSize(key: string, n: number, d: number, makeDirectMap = false): number {
  const dm = makeDirectMap ? 8 * n : 0;
  let g: RegExpExecArray | null;
  if ((g = /^OPQ(\d+)_(\d+),IVF(\d+),PQ(\d+)(?:x(\d+))?$/.exec(key))) {
    const [m, y, c, , b] = [Number(g[1]), Number(g[2]), Number(g[3]), Number(g[4]), Number(g[5] ?? 8)];
    return dm + n * (Math.ceil((m * b) / 8) + 8) + 4 * c * d + 4 * m * y;
  }
  if ((g = /^OPQ(\d+)_(\d+),IVF(\d+)_HNSW(\d+),PQ(\d+)(?:x(\d+))?$/.exec(key))) {
    const [m, y, c, M, b] = [Number(g[1]), Number(g[2]), Number(g[3]), Number(g[4]), Number(g[6] ?? 8)];
    return dm + n * (Math.ceil((m * b) / 8) + 8) + 4 * c * d + 4 * m * y + c * M * 2 * 4;
  }
  if ((g = /^(?:Pad\d+,)?IVF(\d+)(?:_HNSW(\d+))?,PQ(\d+)(?:x(\d+))?(?:np)?$/.exec(key))) {
    // our non-OPQ spelling (and autofaiss' Pad family): codes + ids + centroids (+ HNSW links)
    const [c, M, m, b] = [Number(g[1]), Number(g[2] ?? 0), Number(g[3]), Number(g[4] ?? 8)];
    return dm + n * (Math.ceil((m * b) / 8) + 8) + 4 * c * d + c * M * 8;
  }
  if ((g = /^HNSW(\d+)$/.exec(key))) return 4 * n * d + n * Number(g[1]) * 2 * 4;
  if ((g = /^IVF(\d+),Flat$/.exec(key))) return dm + 4 * n * d + 4 * Number(g[1]) * d;
  if ((g = /^IVF(\d+),SQfp16$/.exec(key))) return dm + 2 * n * d + 4 * Number(g[1]) * d;
  if (key === 'Flat') return 4 * n * d;
  return -1;
}

/** autofaiss' get_optimal_index_keys_v2, exactly as its rules read (codes-only filter for PQ). */
export function autofaissKeys({ n, d, budget, memoryMappable = false }: KeySelectionInput): string[] {
  if (n < 1000) return memoryMappable ? ['IVF1,Flat'] : ['Flat'];
  if (n < 10000) return memoryMappable ? ivfFlatKeys(n) : ['HNSW15'];
  if (!memoryMappable) {
    const m = Math.floor((budget / (4 * n) - d) / 2);
    if (m >= 8) return [`HNSW${Math.min(m, 32)}`];
  }
  if (n < 1_000_000) {
    const keys = ivfFlatKeys(n);
    if (estimatedIndexSize(keys[0]!, n, d) <= budget) return keys;
  }
  const ratio = budget > 0 ? (4 * n * d) / budget : 0;
  return quantisedKeys(n, d)
    .filter(({ m }) => (4 * d) / (m + 8) >= ratio)
    .map(({ key }) => key);
}

export interface KeyChoice {
  key: string;
  estimatedSize: number;
  /** The candidates considered, in order, with their estimated sizes. */
  candidates: { key: string; estimatedSize: number; fits: boolean }[];
  rule: string;
}

/**
 * Our choice: autofaiss' order of preference, but every candidate must fit the budget by its whole
 * estimated size, and IVF-Flat comes before HNSW from IVF_FLAT_OVER_HNSW_FROM vectors on. Throws
 * NoKeyFitsError naming the smallest budget that works.
 */
export function selectIndexKey(input: KeySelectionInput): KeyChoice {
  const { n, d, budget, memoryMappable = false, float16 = false } = input;
  const sized = (keys: string[]) => keys.map((key) => ({ key, estimatedSize: estimatedIndexSize(key, n, d), fits: estimatedIndexSize(key, n, d) <= budget }));
  const pick = (cands: ReturnType<typeof sized>, rule: string): KeyChoice | null => {
    const hit = cands.find((c) => c.fits);
    return hit ? { key: hit.key, estimatedSize: hit.estimatedSize, candidates: cands, rule } : null;
  };
  let choice: KeyChoice | null = null;
  const all: ReturnType<typeof sized> = [];
  if (n < 1000) {
    const c = sized(memoryMappable ? ['IVF1,Flat'] : ['Flat']);
    all.push(...c);
    choice = pick(c, 'fewer than 1,000 vectors: exact search');
  } else if (n < 10000) {
    const c = sized(memoryMappable ? ivfFlatKeys(n) : ['HNSW15']);
    all.push(...c);
    choice = pick(c, 'fewer than 10,000 vectors');
  }
  if (!choice && n >= IVF_FLAT_OVER_HNSW_FROM) {
    const c = sized([preferredIvfKey(n, float16)]);
    all.push(...c);
    choice = pick(
      c,
      `IVF-Flat${float16 ? ' with float16 codes (the vectors are float16: held exactly, in half the bytes)' : ''}: the uncompressed vectors fit the budget, and at ${IVF_FLAT_OVER_HNSW_FROM} vectors and more it builds faster than HNSW and reaches higher recall under the query-time bound`,
    );
  }
  if (!choice && n >= 10000) {
    if (!memoryMappable) {
      const m = Math.floor((budget / (4 * n) - d) / 2);
      if (m >= 8) {
        const c = sized([`HNSW${Math.min(m, 32)}`]);
        all.push(...c);
        choice = pick(c, 'HNSW: the vectors plus at least 8 links each fit the budget');
      }
    }
    if (!choice && n < 1_000_000) {
      const c = sized(ivfFlatKeys(n));
      all.push(...c);
      if (c[0]!.fits) choice = pick(c, 'IVF-Flat: the uncompressed vectors fit the budget');
    }
    if (!choice) {
      const c = sized(quantisedKeys(n, d).map((q) => q.key));
      all.push(...c);
      choice = pick(c, 'OPQ + IVF + PQ: the largest PQ code whose whole index fits the budget');
    }
  }
  if (choice) return choice;
  const usable = all.filter((c) => c.estimatedSize > 0);
  const smallest = usable.reduce((a, b) => (b.estimatedSize < a.estimatedSize ? b : a), usable[0] ?? { key: 'Flat', estimatedSize: 4 * n * d, fits: false });
  throw new NoKeyFitsError(
    `no index of ${n} vectors x ${d} fits --max-index-memory-usage ${formatMemory(budget)}; the smallest that works is ${formatMemory(smallest.estimatedSize)} (${smallest.key}): raise the budget to at least that`,
    smallest.estimatedSize,
  );
}
