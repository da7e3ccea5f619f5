import assert from 'node:assert/strict';
import { test } from 'node:test';
import { autofaissKeys, estimatedIndexSize, NoKeyFitsError, parseMemory, selectIndexKey } from '../embeddings-indices-hosting/index/key-selection.ts';

const G = 2 ** 30;

test('memory sizes parse as autofaiss does: binary units, optional B', () => {
  assert.equal(parseMemory('16G'), 16 * G);
  assert.equal(parseMemory('16GB'), 16 * G);
  assert.equal(parseMemory('512m'), 512 * 2 ** 20);
  assert.equal(parseMemory('100K'), 102400);
  assert.throws(() => parseMemory('4 gigs'), /not a memory size/);
  assert.throws(() => parseMemory('-1G'), /not a memory size/);
});

test('keys follow autofaiss rules across budgets (its documented examples)', () => {
  const cases: [number, number, string, string, number][] = [
    [500, 512, '4G', 'Flat', 0.001],
    [5000, 512, '4G', 'HNSW15', 0.01],
    [100_000, 512, '4G', 'HNSW32', 0.21],
    [1_000_000, 512, '4G', 'HNSW32', 2.15],
    [1_000_000, 512, '1G', 'OPQ256_768,IVF16384_HNSW32,PQ256x8', 0.28],
    [10_000_000, 512, '4G', 'OPQ256_768,IVF65536_HNSW32,PQ256x8', 2.6],
    [100_000_000, 512, '4G', 'OPQ32_224,IVF65536_HNSW32,PQ32x8', 3.87],
    [100_000_000, 512, '16G', 'OPQ128_640,IVF65536_HNSW32,PQ128x8', 12.81],
    [400_000_000, 512, '16G', 'OPQ32_224,IVF131072_HNSW32,PQ32x8', 15.18],
    [5_550_336_490, 768, '200G', 'OPQ24_168,IVF131072_HNSW32,PQ24x8', 165.8],
  ];
  for (const [n, d, b, key, gib] of cases) {
    const budget = parseMemory(b);
    assert.equal(autofaissKeys({ n, d, budget })[0], key, `autofaiss ${n}x${d} @${b}`);
    if (key === 'HNSW32' && n >= 1_000_000) continue; // ours: IVF-Flat there (next test)
    const ours = selectIndexKey({ n, d, budget });
    assert.equal(ours.key, key, `ours ${n}x${d} @${b}`);
    assert.ok(Math.abs(ours.estimatedSize / G - gib) < 0.01 + gib * 0.01, `${key}: ${ours.estimatedSize / G} GiB vs ${gib}`);
    assert.ok(ours.estimatedSize <= budget);
  }
  // 50,000 x 64 across budgets: HNSW, IVF-Flat, then PQ codes shrinking with the budget
  const n = 50_000;
  const d = 64;
  assert.equal(selectIndexKey({ n, d, budget: parseMemory('4G') }).key, 'HNSW32');
  assert.equal(selectIndexKey({ n, d, budget: parseMemory('16M') }).key, 'HNSW9'); // floor((16M / 4N - d) / 2) links
  assert.equal(selectIndexKey({ n, d, budget: parseMemory('13M') }).key, 'IVF1024,Flat');
  assert.equal(selectIndexKey({ n, d, budget: parseMemory('10M') }).key, 'OPQ48_96,IVF1024_HNSW32,PQ48x8');
  assert.equal(selectIndexKey({ n, d, budget: parseMemory('13M'), memoryMappable: true }).key, 'IVF1024,Flat');
  assert.equal(selectIndexKey({ n, d, budget: parseMemory('4G'), memoryMappable: true }).key, 'IVF1024,Flat');
});

test('from 1M vectors on, IVF-Flat instead of HNSW when the uncompressed vectors fit', () => {
  const at = (n: number, b: string, memoryMappable = false) => selectIndexKey({ n, d: 512, budget: parseMemory(b), memoryMappable });
  assert.equal(at(999_999, '4G').key, 'HNSW32'); // below the threshold: autofaiss' HNSW
  const one = at(1_000_000, '4G');
  assert.equal(one.key, 'IVF2048,Flat');
  assert.equal(one.estimatedSize, 4 * 1_000_000 * 512 + 4 * 2048 * 512);
  assert.match(one.rule, /IVF-Flat/);
  assert.equal(at(1_000_000, '4G', true).key, 'IVF2048,Flat'); // memory-mappable as well
  assert.equal(at(4_000_000, '16G').key, 'IVF4096,Flat');
  assert.equal(at(10_000_000, '24G').key, 'IVF8192,Flat');
  // raw vectors over the budget: the quantised family as before
  assert.equal(at(1_000_000, '1G').key, 'OPQ256_768,IVF16384_HNSW32,PQ256x8');
  assert.equal(at(10_000_000, '4G').key, 'OPQ256_768,IVF65536_HNSW32,PQ256x8');
});

test('float16 embeddings: IVF-SQfp16 where IVF-Flat would be, at half the size (and fitting budgets IVF-Flat does not)', () => {
  const at = (n: number, b: string, float16: boolean) => selectIndexKey({ n, d: 512, budget: parseMemory(b), float16 });
  const one = at(1_000_000, '4G', true);
  assert.equal(one.key, 'IVF2048,SQfp16');
  assert.equal(one.estimatedSize, 2 * 1_000_000 * 512 + 4 * 2048 * 512);
  assert.match(one.rule, /float16/);
  assert.equal(at(1_000_000, '4G', false).key, 'IVF2048,Flat');
  assert.equal(at(1_000_000, '1G', true).key, 'IVF2048,SQfp16'); // 0.96 GiB: IVF-Flat's 1.9 GiB would need PQ
  assert.equal(at(10_000_000, '12G', true).key, 'IVF8192,SQfp16');
  assert.equal(at(999_999, '4G', true).key, 'HNSW32'); // below 1M: autofaiss' rules, float16 or not
  assert.equal(at(10_000_000, '4G', true).key, 'OPQ256_768,IVF65536_HNSW32,PQ256x8');
});

test('better than autofaiss: the whole estimated size must fit, not only the codes', () => {
  // autofaiss picks a 0.10 GiB index for a 100M budget at 1M x 512 (codes fit, centroids do not)
  const budget = parseMemory('100M');
  const theirs = autofaissKeys({ n: 1_000_000, d: 512, budget })[0]!;
  assert.equal(theirs, 'OPQ64_448,IVF16384_HNSW32,PQ64x8');
  assert.ok(estimatedIndexSize(theirs, 1_000_000, 512) > budget);
  const ours = selectIndexKey({ n: 1_000_000, d: 512, budget });
  assert.equal(ours.key, 'OPQ48_336,IVF16384_HNSW32,PQ48x8');
  assert.ok(ours.estimatedSize <= budget);
  for (const b of ['2M', '1M', '900K']) {
    const budget = parseMemory(b);
    const c = selectIndexKey({ n: 50_000, d: 64, budget });
    assert.ok(c.estimatedSize <= budget, `${b}: ${c.key} ${c.estimatedSize}`);
    assert.ok(estimatedIndexSize(autofaissKeys({ n: 50_000, d: 64, budget })[0]!, 50_000, 64) > budget, `autofaiss overshoots ${b}`);
  }
});

test('a budget too small for any index names the smallest budget that works (autofaiss #118 stops silently)', () => {
  assert.deepEqual(autofaissKeys({ n: 50_000, d: 64, budget: parseMemory('100K') }), []);
  let smallest = 0;
  assert.throws(
    () => selectIndexKey({ n: 50_000, d: 64, budget: parseMemory('100K') }),
    (e: unknown) => {
      assert.ok(e instanceof NoKeyFitsError);
      assert.match(e.message, /no index of 50000 vectors x 64 fits --max-index-memory-usage 100K; the smallest that works is 810K \(OPQ4_28,IVF894,PQ4x8\)/);
      smallest = e.smallestBudget;
      return true;
    },
  );
  assert.equal(selectIndexKey({ n: 50_000, d: 64, budget: smallest }).key, 'OPQ4_28,IVF894,PQ4x8');
  assert.throws(() => selectIndexKey({ n: 50_000, d: 64, budget: smallest - 1 }), NoKeyFitsError);
  assert.throws(() => selectIndexKey({ n: 400_000_000, d: 512, budget: parseMemory('4G') }), /smallest that works is 4.7G/);
});
