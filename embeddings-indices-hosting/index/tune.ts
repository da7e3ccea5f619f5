// Search-time parameters (nprobe / efSearch) for --max-index-query-time-ms. autofaiss takes the
// largest value whose measured speed stays under the bound, with no recall measured at all. We
// know the exact neighbours of held-out queries, so we take the smallest value that reaches the
// target recall@10 (default 0.999) and still keeps k results per query; only when that value is
// slower than the bound do we fall back to autofaiss' rule (the largest value under the bound).
// Same or better recall than autofaiss' choice where it matters, less latency where it does not.
import type { NativeIndex } from '../../lib/faiss/index.ts';
import { measureLatency, recallAt, type TopK } from './score.ts';

/**
 * 0.99 left recall@10 at 0.991 against autofaiss' 1.000 on the same HNSW32 (it pushes efSearch to
 * the time bound); 0.999 matches it where the bound allows, still far under autofaiss' latency.
 */
export const DEFAULT_TARGET_RECALL = 0.999;

export interface ParamFamily {
  /** Parameter string for value v. */
  render(v: number): string;
  lo: number;
  hi: number;
  name: string;
}

/** The tunable parameter of a factory key (autofaiss 3's table), or null when nothing is tuned (Flat). */
export function paramFamily(key: string, ntotal: number): ParamFamily | null {
  const pq = /,PQ\d+/.test(key);
  const ht = pq ? ',ht=2048' : '';
  let g: RegExpExecArray | null;
  if ((g = /IVF(\d+)_HNSW\d+/.exec(key))) {
    const c = Number(g[1]);
    const hi = Math.max(1, Math.min(6144, c));
    return { name: 'nprobe', lo: Math.min(16, hi), hi, render: (v) => `nprobe=${v},quantizer_efSearch=${Math.max(16, 2 * v)}${ht}` };
  }
  if ((g = /IVF(\d+)/.exec(key))) {
    const c = Number(g[1]);
    return { name: 'nprobe', lo: 1, hi: Math.max(1, Math.min(6144, c)), render: (v) => `nprobe=${v}${ht}` };
  }
  if (/^HNSW\d+/.test(key)) {
    // efSearch beyond the number of vectors buys nothing
    return { name: 'efSearch', lo: Math.min(16, Math.max(1, ntotal)), hi: Math.max(1, Math.min(16383, ntotal)), render: (v) => `efSearch=${v}` };
  }
  return null;
}

export interface TuneResult {
  indexParam: string;
  value: number | null;
  recallAt10: number | null;
  p50Ms: number | null;
  reason: string;
  evaluations: number;
}

export interface TuneOptions {
  maxQueryMs: number;
  targetRecall: number;
  threads?: number;
  /** Results each query must get (autofaiss' min_nearest_neighbors_to_retrieve, 20). */
  minNeighbours?: number;
  log?: (msg: string) => void;
}

/**
 * Smallest v in [a, b] with ok(v), given ok(b) (ok monotone), to within `tolerance` of b: the
 * bisection stops once the interval is that narrow and answers its upper end, which is ok.
 */
async function bisect(a: number, b: number, ok: (v: number) => Promise<boolean>, tolerance = 0): Promise<number> {
  while (a < b && b - a > Math.floor(b * tolerance)) {
    const mid = Math.floor((a + b) / 2);
    if (await ok(mid)) b = mid;
    else a = mid + 1;
  }
  return b;
}

/** Recall evaluations at large values are the costly part of tuning: 4% above the smallest value is as good. */
const RECALL_TOLERANCE = 0.04;

export async function tuneIndex(index: NativeIndex, key: string, queries: Float32Array, truth: TopK, options: TuneOptions): Promise<TuneResult> {
  const fam = paramFamily(key, index.ntotal);
  if (!fam) return { indexParam: '', value: null, recallAt10: null, p50Ms: null, reason: 'nothing to tune for this key', evaluations: 0 };
  const nq = truth.nq;
  const k = Math.min(Math.max(10, options.minNeighbours ?? 20), index.ntotal);
  const k10 = Math.min(10, truth.k, k);
  const recalls = new Map<number, number>();
  const latencies = new Map<number, number>();
  let evaluations = 0;
  const quality = async (v: number): Promise<number> => {
    if (!recalls.has(v)) {
      index.setParameters(fam.render(v));
      const r = await index.search(queries, nq, k, options.threads);
      let missing = 0;
      for (const id of r.labels) if (id < 0) missing++;
      const coverage = 1 - missing / (nq * k);
      // too few results per query counts as not good enough, whatever the recall
      recalls.set(v, coverage >= 0.99 ? recallAt(k10, r.labels, k, truth) : -coverage);
      evaluations++;
    }
    return recalls.get(v)!;
  };
  const speed = async (v: number): Promise<number> => {
    if (!latencies.has(v)) {
      index.setParameters(fam.render(v));
      const lat = await measureLatency(index, queries, nq, 40, { maxSearches: Math.min(200, Math.max(nq, 50)), maxMs: 500, threads: options.threads });
      latencies.set(v, lat.p50Ms);
    }
    return latencies.get(v)!;
  };
  const bound = options.maxQueryMs;
  const target = options.targetRecall;
  const reaches = async (v: number): Promise<boolean> => (await quality(v)) >= target;
  // Gallop up from lo (lo, 2lo, 4lo...): the answer is usually small. A value slower than the bound
  // ends the climb: it is never chosen, and its recall would be the dearest to measure.
  let below = fam.lo - 1; // largest value known fast and short of the target
  let v = fam.lo;
  let hit: number | null = null;
  let slow: number | null = null;
  for (;;) {
    if ((await speed(v)) > bound) {
      slow = v;
      break;
    }
    if (await reaches(v)) {
      hit = v;
      break;
    }
    below = v;
    if (v >= fam.hi) break;
    v = Math.min(fam.hi, Math.max(v + 1, v * 2));
  }
  let value: number;
  let reason: string;
  if (hit !== null) {
    value = await bisect(below + 1, hit, reaches, RECALL_TOLERANCE);
    reason = `smallest ${fam.name} reaching recall@10 >= ${target}`;
  } else if (slow !== null) {
    // autofaiss' rule where the target is not met under the bound: the largest value under it
    const fastest = Math.max(fam.lo, (await bisect(below + 1, slow, async (x) => (await speed(x)) > bound)) - 1);
    const reach = fastest > below && (await reaches(fastest)) ? await bisect(below + 1, fastest, reaches, RECALL_TOLERANCE) : null;
    value = reach ?? fastest;
    reason = reach !== null ? `smallest ${fam.name} reaching recall@10 >= ${target}` : `recall@10 ${target} is out of reach under ${bound} ms; largest ${fam.name} under the bound`;
  } else {
    value = fam.hi;
    reason = `recall@10 ${target} is out of reach; largest ${fam.name}`;
  }
  const indexParam = fam.render(value);
  index.setParameters(indexParam);
  const rec = await quality(value);
  options.log?.(`tuned ${indexParam}: ${reason} (${evaluations} recall evaluations)`);
  return { indexParam, value, recallAt10: rec < 0 ? 0 : rec, p50Ms: latencies.get(value) ?? null, reason, evaluations };
}
