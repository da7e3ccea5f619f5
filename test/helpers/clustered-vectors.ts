// Generated test embeddings: L2-normalised points around random cluster centres (CLIP embeddings are
// clustered, and uniform random vectors make every ANN index look bad), from a seeded generator.

import { seededRandom } from '../../lib/random.ts';

function gaussian(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

export function normalizeRows(x: Float32Array, d: number): void {
  for (let r = 0; r < x.length / d; r++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[r * d + j]! ** 2;
    const inv = 1 / Math.sqrt(s || 1);
    for (let j = 0; j < d; j++) x[r * d + j]! *= inv;
  }
}

/**
 * n x d vectors in `clusters` clusters with relative spread `spread`, rows L2-normalised. The centres
 * come from `centreSeed` when given (so several calls can share them), else from `seed`.
 */
export function clusteredVectors(n: number, d: number, options: { clusters?: number; spread?: number; seed?: number; centreSeed?: number } = {}): Float32Array {
  const rand = seededRandom(options.seed ?? 1);
  const clusters = options.clusters ?? 100;
  const spread = options.spread ?? 0.5;
  const centreRand = options.centreSeed === undefined ? rand : seededRandom(options.centreSeed);
  const centres = new Float32Array(clusters * d);
  for (let i = 0; i < centres.length; i++) centres[i] = gaussian(centreRand);
  normalizeRows(centres, d);
  const x = new Float32Array(n * d);
  const noise = spread / Math.sqrt(d);
  for (let r = 0; r < n; r++) {
    const c = Math.floor(rand() * clusters);
    for (let j = 0; j < d; j++) x[r * d + j] = centres[c * d + j]! + noise * gaussian(rand);
  }
  normalizeRows(x, d);
  return x;
}
