// `run.ts score`: recall@1/@10/@100 of image.index / text.index against exact search over the
// embeddings, on random query rows, and single-query latency (p50 / p99) at the index's tuned
// parameters; prints and writes <index-folder>/score.json.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../lib/atomic-file.ts';
import { CliError, defineCli } from '../../lib/cli.ts';
import { loadFaiss, readIndex } from '../../lib/faiss/index.ts';
import { errorMessage, log } from '../../lib/log.ts';
import { exactTopK, gatherRows, listEmbeddings, measureLatency, recallAt, sampleIds } from './score.ts';

export const scoreCli = defineCli({
  command: 'npx tsx embeddings-indices-hosting/run.ts score',
  summary: 'Recall@1/@10/@100 of the built indices against exact search, and query latency; writes score.json.',
  flags: {
    'index-folder': { type: 'string', required: true, help: 'Folder with image.index / text.index (+ .json) from run.ts index' },
    'embeddings-folder': { type: 'string', required: true, help: 'The embeddings the indices were built from' },
    queries: { type: 'int', default: 1000, help: 'Random query rows' },
    'nb-cores': { type: 'int', default: null, help: 'Threads for faiss (default: all cores)' },
    mmap: { type: 'bool', default: true, help: 'Open the indices memory-mapped, as a search service would' },
    'image-subfolder': { type: 'string', default: 'img_emb', help: 'Image embeddings subfolder' },
    'text-subfolder': { type: 'string', default: 'text_emb', help: 'Text embeddings subfolder' },
    seed: { type: 'int', default: 12345, help: 'Seed for the query sample' },
  },
});

export interface IndexScore {
  index_key: string;
  index_param: string;
  'nb vectors': number;
  queries: number;
  'recall@1': number;
  'recall@10': number;
  'recall@100': number;
  p50_search_speed_ms: number;
  p99_search_speed_ms: number;
}

export async function scoreOne(indexPath: string, embeddingsFolder: string, opts: { queries: number; threads: number; mmap: boolean; seed: number; log: (m: string) => void }): Promise<IndexScore> {
  const infosPath = indexPath.replace(/\.index$/, '.json');
  const infos = existsSync(infosPath) ? (JSON.parse(await readFile(infosPath, 'utf8')) as { index_key?: string; index_param?: string }) : {};
  const index = await readIndex(indexPath, { mmap: opts.mmap });
  try {
    const set = await listEmbeddings(embeddingsFolder);
    if (set.total !== index.ntotal) throw new Error(`${indexPath} holds ${index.ntotal} vectors but ${embeddingsFolder} has ${set.total}: score it against the embeddings it was built from`);
    if (infos.index_param) index.setParameters(infos.index_param);
    const nq = Math.min(opts.queries, set.total);
    const ids = sampleIds(set.total, nq, opts.seed);
    const q = await gatherRows(set, ids);
    const k = Math.min(100, set.total);
    opts.log(`exact top-${k} of ${nq} queries over ${set.total} vectors`);
    const truth = await exactTopK(set, q, nq, k, { metric: index.metric === 'l2' ? 'l2' : 'ip', threads: opts.threads });
    const found = await index.search(q, nq, k, opts.threads);
    const lat = await measureLatency(index, q, nq, 10, { maxSearches: 2000, maxMs: 10_000, threads: opts.threads });
    const at = (r: number) => (r <= k ? recallAt(r, found.labels, k, truth) : recallAt(k, found.labels, k, truth));
    return {
      index_key: infos.index_key ?? index.describe(),
      index_param: infos.index_param ?? '',
      'nb vectors': index.ntotal,
      queries: nq,
      'recall@1': at(1),
      'recall@10': at(10),
      'recall@100': at(100),
      p50_search_speed_ms: lat.p50Ms,
      p99_search_speed_ms: lat.p99Ms,
    };
  } finally {
    index.dispose();
  }
}

export async function main(argv: string[]): Promise<number> {
  const cmd = scoreCli.start(argv, (f) => {
    if (f.queries < 1) throw new CliError('--queries must be >= 1');
    if (!existsSync(f.indexFolder)) throw new CliError(`--index-folder ${f.indexFolder} does not exist`);
    if (!existsSync(f.embeddingsFolder)) throw new CliError(`--embeddings-folder ${f.embeddingsFolder} does not exist`);
  });
  if (typeof cmd === 'number') return cmd;
  const { flags } = cmd;
  try {
    loadFaiss();
  } catch (err) {
    log.error(errorMessage(err));
    return 1;
  }
  const threads = flags.nbCores ?? availableParallelism();
  const result: Record<string, IndexScore> = {};
  try {
    for (const [name, sub] of [['image', flags.imageSubfolder], ['text', flags.textSubfolder]] as const) {
      const indexPath = join(flags.indexFolder, `${name}.index`);
      const emb = join(flags.embeddingsFolder, sub);
      if (!existsSync(indexPath) || !existsSync(emb)) {
        log.info(`${name}: no ${existsSync(indexPath) ? emb : indexPath}, skipped`);
        continue;
      }
      const s = await scoreOne(indexPath, emb, { queries: flags.queries, threads, mmap: flags.mmap, seed: flags.seed, log: (m) => log.info(`${name}: ${m}`) });
      result[name] = s;
      log.info(
        `${name}: ${s.index_key} [${s.index_param}] recall@1 ${s['recall@1'].toFixed(3)} @10 ${s['recall@10'].toFixed(3)} @100 ${s['recall@100'].toFixed(3)}, ` +
          `p50 ${s.p50_search_speed_ms.toFixed(2)} ms p99 ${s.p99_search_speed_ms.toFixed(2)} ms`,
      );
    }
  } catch (err) {
    log.error(errorMessage(err));
    return 1;
  }
  if (Object.keys(result).length === 0) {
    log.error(`no image.index / text.index with embeddings to score in ${flags.indexFolder}`);
    return 1;
  }
  const out = join(flags.indexFolder, 'score.json');
  await writeFileAtomic(out, JSON.stringify(result, null, 2) + '\n');
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  log.info(`wrote ${out}`);
  return 0;
}
