// Our AVX2 distance kernels (lib/faiss/distance-kernels.cc) against Debian's scalar ones: the same
// search results within float rounding, bit-identical below 8 dimensions; and AVX2 in use where the
// CPU has it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { faissAvailable, loadFaiss } from '../lib/faiss/index.ts';

const available = faissAvailable();
const skip = available.ok ? false : available.reason;

type Probe = Record<string, { labels: number[]; distances: number[] }> & { kernels: string };

function probe(kernels: 'generic' | 'default'): Probe {
  const env = { ...process.env };
  if (kernels === 'generic') env.CAH_FAISS_KERNELS = 'generic';
  else delete env.CAH_FAISS_KERNELS;
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/helpers/faiss-kernels-probe.ts'], { env, encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Probe;
}

const cpuHasAvx2 = ((): boolean => {
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
    return flags.includes('avx2') && flags.includes('fma');
  } catch {
    return false;
  }
})();

test('distance kernels: AVX2 where the CPU has it, unless CAH_FAISS_KERNELS=generic', { skip }, () => {
  const want = cpuHasAvx2 && process.env.CAH_FAISS_KERNELS !== 'generic' ? 'avx2' : 'generic';
  assert.equal(loadFaiss().distanceKernels, want);
});

test('AVX2 kernels give the generic kernels\' results within float rounding (Flat, HNSW, IVF-Flat, IVF-PQ)', { skip: skip || (cpuHasAvx2 ? false : 'this CPU has no AVX2 + FMA') }, () => {
  const generic = probe('generic');
  const avx2 = probe('default');
  assert.deepEqual([generic.kernels, avx2.kernels], ['generic', 'avx2']);
  let differentBits = 0;
  for (const key of Object.keys(generic).filter((k) => k !== 'kernels')) {
    const a = generic[key]!;
    const b = avx2[key]!;
    const d = Number(key.split(' ')[0]);
    if (d < 8) {
      // only the scalar tail runs: the same sums in the same order
      assert.deepEqual(b, a, key);
      continue;
    }
    // Exact searches must agree on every id whose distance is not tied within rounding; graph and
    // k-means built on slightly different distances may differ in a rare neighbour.
    const exact = key.includes('Flat') && !key.includes('IVF');
    let same = 0;
    for (let q = 0; q < 40; q++) {
      const la = a.labels.slice(q * 10, q * 10 + 10);
      const lb = new Set(b.labels.slice(q * 10, q * 10 + 10));
      same += la.filter((l) => lb.has(l)).length;
    }
    assert.ok(same >= (exact ? 400 : 396), `${key}: ${same}/400 of the top-10 ids agree`);
    for (let i = 0; i < a.distances.length; i++) {
      if (a.labels[i] !== b.labels[i]) continue;
      const da = a.distances[i]!;
      const db = b.distances[i]!;
      assert.ok(Math.abs(da - db) <= 1e-5 * Math.max(1, Math.abs(da)), `${key}: distance ${da} vs ${db}`);
      if (da !== db) differentBits++;
    }
  }
  assert.ok(differentBits > 0, 'the AVX2 sums really ran (some distances differ in the last bits)');
});
