// `run.ts index`: clip-retrieval index + autofaiss build_index. For image then text: if
// <embeddings-folder>/<subfolder> exists, build <index-folder>/image.index (text.index) and
// image.json (text.json); then copy <embeddings-folder>/metadata into <index-folder>/metadata.
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { tempPathFor } from '../../lib/atomic-file.ts';
import { CliError, defineCli } from '../../lib/cli.ts';
import { interruptibleBySignals, InterruptedError, loadFaiss } from '../../lib/faiss/index.ts';
import { errorMessage, log } from '../../lib/log.ts';
import { addNewPartitions, buildIndex, type BuildOptions } from './build.ts';
import { formatMemory, NoKeyFitsError, parseMemory } from './key-selection.ts';
import { DEFAULT_TARGET_RECALL } from './tune.ts';

export const indexCli = defineCli({
  command: 'npx tsx embeddings-indices-hosting/run.ts index',
  summary: 'Build faiss image and text indices from npy embeddings within a memory budget (clip-retrieval index + autofaiss build_index).',
  flags: {
    'embeddings-folder': { type: 'string', required: true, help: 'Folder with img_emb/, text_emb/ (npy, float16 or float32) and metadata/' },
    'index-folder': { type: 'string', required: true, help: 'Where image.index, text.index, image.json, text.json and metadata/ go' },
    'max-index-memory-usage': { type: 'string', default: '4G', help: 'Budget for each index in memory (autofaiss units: 4G = 4 GiB); the key is chosen to fit it' },
    'current-memory-available': { type: 'string', default: '16G', help: 'RAM the build may use (training sample, add batches)' },
    'max-index-query-time-ms': { type: 'float', default: 10, help: 'Bound on a single query, used when tuning nprobe / efSearch' },
    'nb-cores': { type: 'int', default: null, help: 'Threads for faiss (default: all cores)' },
    'index-key': { type: 'string', default: null, help: 'Force a faiss factory string (e.g. IVF1024,Flat or OPQ32_128,IVF1024,PQ32x8) instead of choosing one' },
    'index-param': { type: 'string', default: null, help: 'Force search parameters (ParameterSpace string, e.g. nprobe=16) instead of tuning' },
    'target-recall': { type: 'float', default: DEFAULT_TARGET_RECALL, help: 'Tuning stops at the smallest nprobe / efSearch reaching this recall@10 on held-out queries (within the time bound)' },
    'metric-type': { type: 'string', default: 'ip', choices: ['ip', 'l2'], help: 'Inner product (normalised CLIP embeddings) or L2' },
    'should-be-memory-mappable': { type: 'bool', default: false, help: 'Only IVF indices (their lists can be memory-mapped by the back end)' },
    'add-new-partitions': { type: 'bool', default: false, help: 'Add npy partitions not yet in the existing indices, without retraining' },
    'copy-metadata': { type: 'bool', default: true, help: 'Copy <embeddings-folder>/metadata to <index-folder>/metadata' },
    'image-subfolder': { type: 'string', default: 'img_emb', help: 'Image embeddings subfolder' },
    'text-subfolder': { type: 'string', default: 'text_emb', help: 'Text embeddings subfolder' },
    'tuning-queries': { type: 'int', default: 500, help: 'Held-out queries for tuning and the speed test' },
    seed: { type: 'int', default: 0, help: 'Seed for the training sample and held-out queries' },
  },
  epilog: [
    'Example: npx tsx embeddings-indices-hosting/run.ts index --embeddings-folder emb --index-folder idx --max-index-memory-usage 4G',
    'A budget too small for any index stops with the smallest budget that works.',
  ].join('\n'),
});

/** Copies metadata files missing (or of another size) in the target; partitions stay in npy order. */
async function copyMetadata(from: string, to: string): Promise<number> {
  let copied = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const src = join(dir, e.name);
      const dst = join(to, relative(from, src));
      if (e.isDirectory()) {
        await walk(src);
        continue;
      }
      if (e.name.startsWith('.tmp-')) continue;
      const have = existsSync(dst) ? (await stat(dst)).size : -1;
      if (have === (await stat(src)).size) continue;
      await mkdir(join(dst, '..'), { recursive: true });
      const tmp = tempPathFor(dst);
      try {
        await copyFile(src, tmp);
        await rename(tmp, dst);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      copied++;
    }
  };
  await walk(from);
  return copied;
}

export async function main(argv: string[]): Promise<number> {
  const cmd = indexCli.start(argv, (f) => {
    if (!existsSync(f.embeddingsFolder)) throw new CliError(`--embeddings-folder ${f.embeddingsFolder} does not exist`);
    if (f.nbCores !== null && f.nbCores < 1) throw new CliError('--nb-cores must be >= 1');
    if (!(f.maxIndexQueryTimeMs > 0)) throw new CliError('--max-index-query-time-ms must be > 0');
    if (!(f.targetRecall > 0 && f.targetRecall <= 1)) throw new CliError('--target-recall must be in (0, 1]');
    return { budget: parseMemory(f.maxIndexMemoryUsage), currentMemory: parseMemory(f.currentMemoryAvailable) };
  });
  if (typeof cmd === 'number') return cmd;
  const { flags, checked: { budget, currentMemory } } = cmd;
  try {
    loadFaiss();
  } catch (err) {
    log.error(errorMessage(err));
    return 1;
  }
  const threads = flags.nbCores ?? availableParallelism();
  await mkdir(flags.indexFolder, { recursive: true });
  const started = performance.now();
  const summary: string[] = [];
  let built = 0;
  try {
    await interruptibleBySignals(async () => {
      for (const [name, sub] of [['image', flags.imageSubfolder], ['text', flags.textSubfolder]] as const) {
        const folder = join(flags.embeddingsFolder, sub);
        if (!existsSync(folder)) {
          log.info(`${name}: no ${folder}, skipped`);
          continue;
        }
        const opts: BuildOptions = {
          embeddingsFolder: folder,
          indexPath: resolve(flags.indexFolder, `${name}.index`),
          infosPath: join(flags.indexFolder, `${name}.json`),
          budget,
          currentMemory,
          maxQueryMs: flags.maxIndexQueryTimeMs,
          threads,
          indexKey: flags.indexKey,
          indexParam: flags.indexParam,
          metric: flags.metricType as 'ip' | 'l2',
          memoryMappable: flags.shouldBeMemoryMappable,
          targetRecall: flags.targetRecall,
          tuningQueries: flags.tuningQueries,
          seed: flags.seed,
          log: (m) => log.info(`${name}: ${m}`),
        };
        const t = performance.now();
        if (flags.addNewPartitions && existsSync(opts.indexPath)) {
          const r = await addNewPartitions(opts);
          summary.push(`${name}: +${r.added.length} partitions -> ${r.infos['nb vectors']} vectors, ${r.infos.index_key} ${formatMemory(r.infos['size in bytes'])} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
        } else {
          const r = await buildIndex(opts);
          const i = r.infos;
          summary.push(
            `${name}: ${i['nb vectors']} x ${i['vectors dimension']} -> ${i.index_key} [${i.index_param}] ${formatMemory(i['size in bytes'])}, ` +
              `avg ${i.avg_search_speed_ms.toFixed(2)} ms/query, train ${r.trainSeconds.toFixed(1)} s, add ${r.addSeconds.toFixed(1)} s, peak rss ${formatMemory(r.peakRss)}`,
          );
        }
        built++;
      }
    });
    if (flags.copyMetadata) {
      const meta = join(flags.embeddingsFolder, 'metadata');
      if (existsSync(meta)) summary.push(`metadata: ${await copyMetadata(meta, join(flags.indexFolder, 'metadata'))} files copied`);
    }
  } catch (err) {
    if (err instanceof InterruptedError) {
      log.error(`${err.message}; nothing half-written was left under a final name`);
      return err.exitCode;
    }
    if (err instanceof NoKeyFitsError) {
      log.error(err.message);
      return 2;
    }
    log.error(errorMessage(err));
    return 1;
  }
  for (const line of summary) log.info(line);
  log.info(`done: ${built} indices in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (built === 0) {
    log.error(`no ${flags.imageSubfolder}/ or ${flags.textSubfolder}/ under ${flags.embeddingsFolder}: nothing to index`);
    return 1;
  }
  return 0;
}
