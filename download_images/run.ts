// download_images: img2dataset 1.47's `download()` as a command (contracts.md section 3).
// Flags -> validated config -> output folder prepared (incremental / overwrite / extend) -> input
// lists cut into shards under <out>/_tmp -> shards handed to worker processes -> summary.
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { exitOnCliError, isMainModule } from '../lib/cli.ts';
import { errorMessage, log } from '../lib/log.ts';
import { openDb } from '../lib/parquet.ts';
import { Progress } from '../lib/progress.ts';
import { distribute, killWorkers } from './distributor.ts';
import { cli, toConfig, type DownloadConfig } from './options.ts';
import { readShards, ReaderError, shardName, type InputShard } from './reader.ts';
import { resolveEngine } from './resizer.ts';
import { prepareOutput } from './shard-state.ts';
import { loggerLine, RunSummary } from './stats.ts';

/** The BullMQ distributor, once --distributor bullmq has loaded it. */
let bullmq: typeof import('./distributor-bullmq.ts') | undefined;

export interface RunResult {
  summary: RunSummary;
  failedShards: number[];
  skippedShards: number;
}

/** The whole job; resolves when every shard is done or has failed for good. */
export async function downloadImages(config: DownloadConfig): Promise<RunResult> {
  const outputFolder = resolve(config.outputFolder);
  const state = await prepareOutput(outputFolder, config.incrementalMode);
  const tmpDir = join(outputFolder, '_tmp');
  await mkdir(tmpDir, { recursive: true });
  const summary = new RunSummary();
  const progress = new Progress({ label: 'download_images', unit: 'img', total: 0 });
  let expected = 0;
  // Sharding streams through DuckDB, which spills past this cap: memory does not grow with the input.
  const db = await openDb({ threads: 2, memoryLimit: '256MB', tempDirectory: join(tmpDir, 'duckdb') });
  async function* shards(): AsyncGenerator<InputShard> {
    for await (const s of readShards(db, {
      ...config,
      urlList: resolve(config.urlList),
      tmpDir,
      startShardId: state.startShardId,
      doneShards: state.doneShards,
    })) {
      expected += s.rows;
      progress.setTotal(expected);
      yield s;
    }
  }
  let failed: InputShard[] = [];
  try {
    // bullmq: shards go to a Redis queue for download_images/worker.ts processes, maybe on other machines.
    // Loaded only when asked for: bullmq and ioredis add a fifth of a second to every start.
    const run = config.distributor === 'bullmq' ? (bullmq = await import('./distributor-bullmq.ts')).distributeBullmq : distribute;
    const res = await run(shards(), {
      config,
      outputFolder,
      onProgress: (ok, bad, bytes) => {
        progress.item(true, ok);
        progress.item(false, bad);
        progress.addBytes(bytes);
      },
      onShardDone: (shard, stats) => {
        summary.addShard(stats);
        log.info(loggerLine('worker', stats, stats.duration));
        log.info(`${loggerLine('total', summary, 0).replace(/ - images per sec: \d+/, '')} (shard ${shardName(shard.shardId, config.oomShardCount)} done)`);
      },
    });
    failed = res.failed;
  } finally {
    progress.stop();
    db.close();
  }
  // A rerun reshards the inputs anyway, so the parts of failed shards are of no use (as img2dataset).
  await rm(tmpDir, { recursive: true, force: true });
  return { summary, failedShards: failed.map((s) => s.shardId), skippedShards: state.doneShards.size };
}

async function main(): Promise<void> {
  const { flags } = cli.run();
  const config: DownloadConfig = exitOnCliError(() => toConfig(flags));
  if (config.enableWandb) log.warn('--enable-wandb: Weights & Biases logging is not available in this implementation; continuing without it');
  const engine = resolveEngine(config.resizeEngine);
  if (engine.note) log.warn(engine.note);
  const outputFolder = resolve(config.outputFolder);
  process.once('SIGINT', () => {
    // As img2dataset: drop the shard inputs and stop; unfinished shards never reach final names.
    killWorkers();
    // bullmq: queued shards are withdrawn first, or workers would start on deleted inputs.
    void (bullmq?.cancelQueuedShards() ?? Promise.resolve())
      .then(() => rm(join(outputFolder, '_tmp'), { recursive: true, force: true }))
      .finally(() => process.exit(130));
  });
  try {
    const { summary, failedShards, skippedShards } = await downloadImages(config);
    log.info(summary.format());
    if (skippedShards > 0) log.info(`shards already finished and skipped: ${skippedShards}`);
    if (failedShards.length > 0) {
      log.error(`${failedShards.length} shard(s) failed: ${failedShards.slice(0, 20).join(', ')}${failedShards.length > 20 ? ', ...' : ''}; rerun the same command to finish them`);
      process.exit(1);
    }
  } catch (err) {
    if (err instanceof ReaderError) log.error(err.message);
    else log.error(errorMessage(err));
    process.exit(1);
  }
}

if (isMainModule(import.meta.url)) await main();
