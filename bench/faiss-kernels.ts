// Build and search speed of our faiss addon with Debian's generic distance kernels vs ours (AVX2 +
// FMA, lib/faiss/distance-kernels.cc), by hand: each kernel set runs in its own child process
// (the choice is made when the addon loads), on the same clustered vectors.
//   npx tsx bench/faiss-kernels.ts [--vectors 50000] [--hnsw-vectors 20000] [--dim 512] [--threads 1]
import { spawnSync } from 'node:child_process';
import { defineCli } from '../lib/cli.ts';
import { createIndex, loadFaiss } from '../lib/faiss/index.ts';
import { log } from '../lib/log.ts';
import { clusteredVectors } from '../test/helpers/clustered-vectors.ts';

const cli = defineCli({
  command: 'npx tsx bench/faiss-kernels.ts',
  summary: 'faiss train / add / search speed with the generic vs the AVX2 distance kernels.',
  flags: {
    vectors: { type: 'int', default: 50_000, help: 'Vectors for the IVF keys (train and add)' },
    'hnsw-vectors': { type: 'int', default: 20_000, help: 'Vectors added to HNSW32' },
    dim: { type: 'int', default: 512, help: 'Dimension' },
    threads: { type: 'int', default: 1, help: 'OpenMP threads for train / add (searches use 1)' },
    queries: { type: 'int', default: 200, help: 'Single-vector searches timed per key' },
    keys: { type: 'string', default: 'HNSW32,IVF1024,Flat,IVF256,PQ64x8', help: 'Which keys (of HNSW32, IVF1024,Flat, IVF256,PQ64x8)' },
    child: { type: 'string', default: null, help: '(internal) run one kernel set and print JSON' },
  },
});

type Timings = Record<string, number | string>;

async function measure(flags: ReturnType<typeof cli.run>['flags']): Promise<Timings> {
  const d = flags.dim;
  const t: Timings = { kernels: loadFaiss().distanceKernels };
  const x = clusteredVectors(flags.vectors, d, { clusters: 1000, spread: 0.6, seed: 1 });
  const q = clusteredVectors(flags.queries, d, { clusters: 1000, spread: 0.6, seed: 2 });
  // CPU seconds too (all threads of this process): on shared cores the wall time mostly measures
  // the neighbours.
  const seconds = async (fn: () => Promise<unknown>): Promise<{ wall: number; cpu: number }> => {
    const s = performance.now();
    const c = process.cpuUsage();
    await fn();
    const u = process.cpuUsage(c);
    return { wall: (performance.now() - s) / 1000, cpu: (u.user + u.system) / 1e6 };
  };
  const searchMs = async (idx: ReturnType<typeof createIndex>, label: string): Promise<void> => {
    const s = await seconds(async () => {
      for (let i = 0; i < flags.queries; i++) await idx.search(q.subarray(i * d, (i + 1) * d), 1, 10, 1);
    });
    t[`${label} wall ms`] = (s.wall * 1000) / flags.queries;
    t[`${label} cpu ms`] = (s.cpu * 1000) / flags.queries;
  };
  const rate = (label: string, n: number, s: { wall: number; cpu: number }): void => {
    t[`${label} vectors/s`] = Math.round(n / s.wall);
    t[`${label} vectors/cpu-s`] = Math.round(n / s.cpu);
  };
  if (flags.keys.includes('HNSW32')) {
    const n = Math.min(flags.hnswVectors, flags.vectors);
    const idx = createIndex(d, 'HNSW32', 'ip');
    log.info(`${t.kernels}: HNSW32`);
    rate('HNSW32 add', n, await seconds(() => idx.add(x.subarray(0, n * d), n, flags.threads)));
    idx.setParameters('efSearch=64');
    await searchMs(idx, 'HNSW32 search (efSearch 64)');
    idx.dispose();
  }
  for (const key of ['IVF1024,Flat', 'IVF256,PQ64x8']) {
    if (!flags.keys.includes(key)) continue;
    const idx = createIndex(d, key, 'ip');
    idx.configureTraining({ polysemousTraining: false }); // as run.ts index trains (faiss' default takes minutes)
    log.info(`${t.kernels}: ${key}`);
    const train = await seconds(() => idx.train(x, flags.vectors, flags.threads));
    t[`${key} train wall s`] = train.wall;
    t[`${key} train cpu s`] = train.cpu;
    rate(`${key} add`, flags.vectors, await seconds(() => idx.add(x, flags.vectors, flags.threads)));
    idx.setParameters('nprobe=16');
    await searchMs(idx, `${key} search (nprobe 16)`);
    idx.dispose();
  }
  return t;
}

const { flags } = cli.run();
if (flags.child) {
  process.stdout.write(JSON.stringify(await measure(flags)));
} else {
  const runs: Timings[] = [];
  for (const kernels of ['generic', 'avx2']) {
    log.info(`running with ${kernels} kernels...`);
    const env = { ...process.env, CAH_FAISS_KERNELS: kernels };
    const args = process.argv.slice(2).concat(['--child', kernels]);
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/faiss-kernels.ts', ...args], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (r.status !== 0) {
      log.error(`the ${kernels} run failed (exit ${r.status})`);
      process.exit(1);
    }
    runs.push(JSON.parse(r.stdout) as Timings);
  }
  const [g, a] = runs as [Timings, Timings];
  log.info(`\n${flags.vectors} x ${flags.dim} (HNSW: ${Math.min(flags.hnswVectors, flags.vectors)}), ${flags.threads} thread(s); kernels ${g.kernels} vs ${a.kernels}`);
  log.info(`${'measure'.padEnd(40)} ${'generic'.padStart(10)} ${'avx2'.padStart(10)}  ratio`);
  for (const k of Object.keys(g).filter((k) => k !== 'kernels')) {
    const [vg, va] = [g[k] as number, a[k] as number];
    const better = k.includes('vectors/') ? va / vg : vg / va;
    log.info(`${k.padEnd(40)} ${vg.toFixed(vg < 100 ? 2 : 0).padStart(10)} ${va.toFixed(va < 100 ? 2 : 0).padStart(10)}  ${better.toFixed(2)}x faster`);
  }
  if (a.kernels !== 'avx2') log.warn('this CPU has no AVX2 + FMA: both runs used the generic kernels');
}
