// The tuner against an index whose recall and speed are known functions of efSearch: it must pick
// the smallest value reaching the target (within its 4% tolerance), fall back to the largest value
// under the time bound when the target lies beyond it, and never evaluate recall above the bound.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NativeIndex } from '../lib/faiss/index.ts';
import type { TopK } from '../embeddings-indices-hosting/index/score.ts';
import { tuneIndex } from '../embeddings-indices-hosting/index/tune.ts';

const NQ = 200;
const K = 20;
const D = 4;

/**
 * HNSW-like: at efSearch v, query q finds its true top 10 when q < NQ * recall(v), else only 9 of
 * them; a search takes msPerUnit * v ms (busy wait, so measured latency follows it).
 */
function simulatedIndex(recall: (v: number) => number, msPerUnit: number) {
  let ef = 16;
  const recallEvaluatedAt: number[] = [];
  const index = {
    d: D,
    ntotal: 100_000,
    setParameters(p: string) {
      ef = Number(/efSearch=(\d+)/.exec(p)![1]);
    },
    async search(_x: Float32Array, nq: number, k: number) {
      if (nq > 1) recallEvaluatedAt.push(ef);
      const until = performance.now() + msPerUnit * ef;
      while (performance.now() < until) {
        // busy: latency is what the tuner measures
      }
      const labels = new Float64Array(nq * k);
      const good = Math.floor(NQ * recall(ef));
      for (let q = 0; q < nq; q++) {
        for (let i = 0; i < k; i++) labels[q * k + i] = q * 1000 + i;
        if (q >= good) labels[q * k + 9] = -2; // one of the top 10 missed
      }
      return { labels, distances: new Float32Array(nq * k) };
    },
  };
  return { index: index as unknown as NativeIndex, recallEvaluatedAt };
}

const truth: TopK = (() => {
  const labels = new Float64Array(NQ * 10);
  for (let q = 0; q < NQ; q++) for (let i = 0; i < 10; i++) labels[q * 10 + i] = q * 1000 + i;
  return { nq: NQ, k: 10, labels, distances: new Float32Array(NQ * 10) };
})();
const queries = new Float32Array(NQ * D);

/** Share of queries with all 10 found rises linearly to 1 at v = full. */
const linearTo = (full: number) => (v: number) => Math.min(1, v / full);

test('the smallest efSearch reaching the target recall, within 4%, when it is under the time bound', async () => {
  // recall@10 = 0.9 + 0.1 * share; target 0.999 needs share >= 0.99, i.e. v >= 0.99 * 300 = 297
  const { index, recallEvaluatedAt } = simulatedIndex(linearTo(300), 0.0001);
  const r = await tuneIndex(index, 'HNSW32', queries, truth, { maxQueryMs: 10, targetRecall: 0.999, minNeighbours: K });
  assert.ok(r.value! >= 297 && r.value! <= 297 * 1.04 + 1, `efSearch ${r.value} not within 4% above 297`);
  assert.ok(r.recallAt10! >= 0.999);
  assert.match(r.reason, /smallest efSearch reaching/);
  assert.ok(Math.max(...recallEvaluatedAt) <= 512, 'the gallop stops at the first value reaching the target');
});

test('target beyond the time bound: the largest efSearch under it, recall never evaluated above it', async () => {
  // 0.02 ms per unit: 10 ms at 500; the target needs 990
  const { index, recallEvaluatedAt } = simulatedIndex(linearTo(1000), 0.02);
  const r = await tuneIndex(index, 'HNSW32', queries, truth, { maxQueryMs: 10, targetRecall: 0.999, minNeighbours: K });
  assert.ok(r.value! >= 420 && r.value! <= 500, `efSearch ${r.value}: not the largest under 10 ms (~500)`);
  assert.match(r.reason, /out of reach under 10 ms/);
  assert.ok(Math.max(...recallEvaluatedAt) <= 500, `recall evaluated at ${Math.max(...recallEvaluatedAt)}, over the bound`);
});
