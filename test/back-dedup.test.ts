// Near-duplicate removal of /knn-service (deduplicate: true) against a brute-force reference:
// connected components of "inner product > 0.94", seeded in rank order, best-ranked member kept.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dedupPositions } from '../embeddings-indices-hosting/back/knn.ts';
import { createIndex, faissAvailable } from '../lib/faiss/index.ts';

const skip = faissAvailable().ok ? false : 'faiss addon not built (bash .ci/install)';

function bruteForce(v: Float32Array, n: number, d: number, threshold: number): number[] {
  const comp = new Int32Array(n).fill(-1);
  const kept: number[] = [];
  for (let s = 0; s < n; s++) {
    if (comp[s] !== -1) continue;
    comp[s] = s;
    kept.push(s);
    const stack = [s];
    while (stack.length) {
      const a = stack.pop()!;
      for (let b = 0; b < n; b++) {
        if (comp[b] !== -1) continue;
        let dot = 0;
        for (let j = 0; j < d; j++) dot += v[a * d + j]! * v[b * d + j]!;
        if (dot > threshold) {
          comp[b] = s;
          stack.push(b);
        }
      }
    }
  }
  return kept;
}

/** n unit vectors in `groups` tight clusters (plus chains: a-b and b-c close, a-c not), shuffled. */
function clustered(n: number, d: number, groups: number, seed: number): Float32Array {
  let x = seed;
  const rnd = (): number => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5;
  const centres = Array.from({ length: groups }, () => Array.from({ length: d }, rnd));
  const v = new Float32Array(n * d);
  for (let r = 0; r < n; r++) {
    const c = centres[Math.floor((rnd() + 0.5) * groups) % groups]!;
    const spread = r % 3 === 0 ? 0.6 : 0.15;
    let s = 0;
    for (let j = 0; j < d; j++) s += (v[r * d + j] = c[j]! + spread * rnd() * Math.sqrt(12 / d) * 2) ** 2;
    for (let j = 0; j < d; j++) v[r * d + j] = v[r * d + j]! / Math.sqrt(s);
  }
  return v;
}

test('dedupPositions equals the brute-force connected components', { skip }, async () => {
  for (const [n, d, groups] of [[1, 8, 1], [2, 8, 1], [50, 16, 5], [300, 32, 20], [600, 64, 200]] as const) {
    const v = clustered(n, d, groups, n + d);
    const got = await dedupPositions(v, n, d, 0.94);
    const want = bruteForce(v, n, d, 0.94);
    assert.deepEqual(got, want, `n=${n} d=${d}`);
    if (n >= 50) assert.ok(got.length < n && got.length > 1, `n=${n}: ${got.length} kept: the data must exercise both cases`);
  }
});

test('searchAndDedup (the rule inside the native search job) equals the brute-force components of its results', { skip }, async () => {
  for (const [n, d, groups] of [[2, 8, 1], [50, 16, 5], [256, 64, 30]] as const) {
    const v = clustered(n, d, groups, 7 * n + d);
    const idx = createIndex(d, 'Flat', 'ip');
    try {
      await idx.add(v, n, 1);
      // k beyond the index size: the -1 labels past the n results are left out, as in the JS path
      const r = await idx.searchAndDedup(v.subarray(0, d), n + 3, 1, 0.94);
      const labels = Array.from(r.labels.subarray(0, n));
      assert.deepEqual(Array.from(r.labels.subarray(n)), [-1, -1, -1]);
      const inOrder = new Float32Array(n * d);
      labels.forEach((id, p) => inOrder.set(v.subarray(id * d, (id + 1) * d), p * d));
      const want = bruteForce(inOrder, n, d, 0.94);
      assert.deepEqual(Array.from(r.keep), want, `n=${n} d=${d}`);
      if (n >= 50) assert.ok(want.length < n && want.length > 1, `n=${n}: ${want.length} kept: the data must exercise both cases`);
    } finally {
      idx.dispose();
    }
  }
});
