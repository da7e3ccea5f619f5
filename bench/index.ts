// Stage 4b benchmark, by hand: N x D clustered float16 vectors in P npy files, then
// `run.ts index` and `run.ts score` on them. Prints build wall time, CPU, peak RSS of the process
// tree, the chosen key, index size, recall@10 and p50 latency.
//
//   npx tsx bench/index.ts --vectors 1000000 --dim 512 --files 10 --max-index-memory-usage 4G [--index-key K]
//
// With --autofaiss PYTHON (a venv with autofaiss, made once with
//   python3 -m venv .bench/af && .bench/af/bin/pip install autofaiss 'pyarrow<15')
// autofaiss build_index runs on the same files with the same budget, and its index is scored by
// the same `run.ts score` (recall against exact search, latency at its tuned parameters).
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { defineCli } from '../lib/cli.ts';
import { NpyWriter } from '../lib/npy.ts';
import { clusteredVectors } from '../test/helpers/clustered-vectors.ts';
import { runMeasured } from './process-tree.ts';

const cli = defineCli({
  command: 'npx tsx bench/index.ts',
  summary: 'Benchmark run.ts index + score on generated clustered float16 embeddings.',
  flags: {
    vectors: { type: 'int', default: 1_000_000, help: 'Vectors to generate' },
    dim: { type: 'int', default: 512, help: 'Dimension' },
    files: { type: 'int', default: 10, help: 'npy partitions' },
    'work-dir': { type: 'string', default: '.bench/index', help: 'Where the embeddings and the index go' },
    'max-index-memory-usage': { type: 'string', default: '4G', help: 'Budget passed to run.ts index' },
    'current-memory-available': { type: 'string', default: '16G', help: 'Passed to run.ts index' },
    'index-key': { type: 'string', default: null, help: 'Force a key' },
    'nb-cores': { type: 'int', default: null, help: 'Threads' },
    regenerate: { type: 'bool', default: false, help: 'Regenerate the embeddings even if present' },
    clusters: { type: 'int', default: 1000, help: 'Cluster centres per 50,000-vector block (or in all, with --shared-centres)' },
    spread: { type: 'float', default: 0.6, help: 'Spread of the points around their centre (noise norm relative to the unit centre)' },
    'shared-centres': { type: 'bool', default: false, help: 'One set of centres for every block (clusters span the files) instead of new centres per block' },
    autofaiss: { type: 'string', default: null, help: 'Python with autofaiss installed: also run autofaiss build_index on the same files' },
  },
});

const { flags } = cli.run();
const emb = join(flags.workDir, 'emb');
const out = join(flags.workDir, 'idx');
const shape = `${flags.clusters}${flags.sharedCentres ? 'shared' : 'perblock'}-spread${flags.spread}`;
const marker = join(emb, `generated-${flags.vectors}x${flags.dim}x${flags.files}-${shape}`);
if (flags.regenerate || !existsSync(marker)) {
  await rm(emb, { recursive: true, force: true });
  const per = Math.ceil(flags.vectors / flags.files);
  for (let p = 0; p < flags.files; p++) {
    const rows = Math.min(per, flags.vectors - p * per);
    const w = await NpyWriter.create(join(emb, 'img_emb', `img_emb_${String(p).padStart(3, '0')}.npy`), 'float16', flags.dim);
    for (let r = 0; r < rows; r += 50_000) {
      const n = Math.min(50_000, rows - r);
      // one seed per block; by default each block also draws its own centres (tight clusters of
      // ~50 points at the defaults), with --shared-centres all blocks use seed 1's centres
      await w.append(clusteredVectors(n, flags.dim, { clusters: flags.clusters, seed: 1 + p * 1000 + r / 50_000, spread: flags.spread, centreSeed: flags.sharedCentres ? 1 : undefined }));
    }
    await w.close();
  }
  await NpyWriter.create(marker, 'float32', 1).then((w) => w.close());
  process.stderr.write(`generated ${flags.vectors} x ${flags.dim} in ${flags.files} files under ${emb} (${shape})\n`);
}
await rm(out, { recursive: true, force: true });
const common = flags.nbCores ? ['--nb-cores', String(flags.nbCores)] : [];
const build = await runMeasured(process.execPath, [
  '--import', 'tsx', 'embeddings-indices-hosting/run.ts', 'index', '--embeddings-folder', emb, '--index-folder', out,
  '--max-index-memory-usage', flags.maxIndexMemoryUsage, '--current-memory-available', flags.currentMemoryAvailable,
  ...(flags.indexKey ? ['--index-key', flags.indexKey] : []), ...common,
]);
if (build.code !== 0) {
  process.stderr.write(`index failed (${build.code}):\n${build.stderrTail}\n`);
  process.exit(1);
}
async function scoreFolder(folder: string): Promise<Record<string, number> | null> {
  await runMeasured(process.execPath, ['--import', 'tsx', 'embeddings-indices-hosting/run.ts', 'score', '--embeddings-folder', emb, '--index-folder', folder, '--queries', '500', ...common]);
  const f = join(folder, 'score.json');
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as { image: Record<string, number> }).image : null;
}

const line = (k: string, v: string) => process.stdout.write(`${k.padEnd(24)} ${v}\n`);
function report(who: string, run: Awaited<ReturnType<typeof runMeasured>>, infos: Record<string, number | string>, s: Record<string, number> | null): void {
  process.stdout.write(`--- ${who}\n`);
  line('key', `${infos.index_key} [${infos.index_param}]`);
  line('build wall', `${run.seconds.toFixed(1)} s (cpu ${run.cpuSeconds.toFixed(1)} s)`);
  line('build peak tree RSS', `${run.peakTreeRssMb.toFixed(0)} MB`);
  line('index size', `${((infos['size in bytes'] as number) / 2 ** 20).toFixed(1)} MiB`);
  if (s) line('recall@1/@10/@100', `${s['recall@1']!.toFixed(3)} / ${s['recall@10']!.toFixed(3)} / ${s['recall@100']!.toFixed(3)}`);
  if (s) line('latency p50 / p99', `${s.p50_search_speed_ms!.toFixed(2)} / ${s.p99_search_speed_ms!.toFixed(2)} ms`);
}

line('vectors', `${flags.vectors} x ${flags.dim} float16 in ${flags.files} files, budget ${flags.maxIndexMemoryUsage}`);
report('ours (run.ts index)', build, JSON.parse(readFileSync(join(out, 'image.json'), 'utf8')) as Record<string, number | string>, await scoreFolder(out));
process.stdout.write(build.stderrTail.split('\n').filter((l) => /trained in|added .*\/s|tuned|peak rss/.test(l)).slice(-6).join('\n') + '\n');

if (flags.autofaiss) {
  const afOut = join(flags.workDir, 'idx-autofaiss');
  await rm(afOut, { recursive: true, force: true });
  await mkdir(afOut, { recursive: true });
  const script = [
    'import sys',
    'from autofaiss import build_index',
    'build_index(embeddings=sys.argv[1], index_path=sys.argv[2], index_infos_path=sys.argv[3], max_index_memory_usage=sys.argv[4], current_memory_available=sys.argv[5], nb_cores=(int(sys.argv[6]) if sys.argv[6] else None), index_key=(sys.argv[7] or None))',
  ].join('\n');
  const af = await runMeasured(flags.autofaiss, ['-c', script, join(emb, 'img_emb'), join(afOut, 'knn.index'), join(afOut, 'index_infos.json'), flags.maxIndexMemoryUsage, flags.currentMemoryAvailable, flags.nbCores ? String(flags.nbCores) : '', flags.indexKey ?? '']);
  if (af.code !== 0 || !existsSync(join(afOut, 'knn.index'))) {
    process.stderr.write(`autofaiss failed (${af.code}):\n${af.stderrTail}\n`);
    process.exit(1);
  }
  // score it the same way: our score reads <name>.index + <name>.json
  await copyFile(join(afOut, 'knn.index'), join(afOut, 'image.index'));
  await copyFile(join(afOut, 'index_infos.json'), join(afOut, 'image.json'));
  report('autofaiss build_index', af, JSON.parse(readFileSync(join(afOut, 'index_infos.json'), 'utf8')) as Record<string, number | string>, await scoreFolder(afOut));
}
