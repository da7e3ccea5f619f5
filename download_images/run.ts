// download_images: img2dataset 1.47's `download()` as a command (contracts.md section 3).
// Flags -> validated config -> output folder prepared (incremental / overwrite / extend) -> input
// lists cut into shards under <out>/_tmp -> shards handed to worker processes -> summary.
import { mkdir, realpath, rm } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { CliError, exitOnCliError, isMainModule } from '../lib/cli.ts';
import { lockOutputOrExit } from '../lib/output-lock.ts';
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
  /** Lines of txt/csv/tsv lists that could not be read, each named in a warning. */
  rejectedLines: number;
}

/** Warnings printed per input file before they are only counted. */
const REJECT_WARNINGS_PER_FILE = 20;

/**
 * Refuses a URL list that the run would delete or read back as input: inside the output folder
 * with --incremental-mode overwrite, or the output folder itself.
 */
export async function checkListPlacement(config: DownloadConfig): Promise<void> {
  const out = resolve(config.outputFolder);
  let list = resolve(config.urlList);
  let outReal = out;
  try {
    list = await realpath(list);
  } catch {
    return; // a missing list is reported by the reader
  }
  try {
    outReal = await realpath(out);
  } catch {
    // no output folder yet
  }
  const rel = relative(outReal, list);
  const inside = rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
  if (rel === '') {
    throw new CliError(`--url-list ${config.urlList} is the output folder itself; put the list elsewhere or pick another --output-folder`);
  }
  if (inside && config.incrementalMode === 'overwrite') {
    throw new CliError(
      `--url-list ${config.urlList} is inside --output-folder ${config.outputFolder}, which --incremental-mode overwrite clears; move the list out of it first (nothing was deleted)`,
    );
  }
}

/** The whole job; resolves when every shard is done or has failed for good. */
export async function downloadImages(config: DownloadConfig): Promise<RunResult> {
  const outputFolder = resolve(config.outputFolder);
  const state = await prepareOutput(outputFolder, config.incrementalMode);
  const tmpDir = join(outputFolder, '_tmp');
  await mkdir(tmpDir, { recursive: true });
  const summary = new RunSummary();
  let rejectedLines = 0;
  const rejectsPerFile = new Map<string, number>();
  const onReject = (file: string, r: { line: number; reason: string }): void => {
    rejectedLines++;
    const k = (rejectsPerFile.get(file) ?? 0) + 1;
    rejectsPerFile.set(file, k);
    if (k <= REJECT_WARNINGS_PER_FILE) log.warn(`${file} line ${r.line} ${r.reason}: line skipped, the other rows go on`);
    else if (k === REJECT_WARNINGS_PER_FILE + 1) log.warn(`${file}: more odd lines; only counted from here on`);
  };
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
      onReject,
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
    // A rerun reshards the inputs anyway, so the parts of failed shards are of no use (as
    // img2dataset); a run that stopped on a bad input leaves no empty _tmp/ behind either.
    await rm(tmpDir, { recursive: true, force: true });
  }
  for (const [file, k] of rejectsPerFile) log.warn(`${file}: ${k} line(s) could not be read and were skipped`);
  return { summary, failedShards: failed.map((s) => s.shardId), skippedShards: state.doneShards.size, rejectedLines };
}

async function main(): Promise<void> {
  const { flags } = cli.run();
  const config: DownloadConfig = exitOnCliError(() => toConfig(flags));
  if (config.enableWandb) log.warn('--enable-wandb: Weights & Biases logging is not available in this implementation; continuing without it');
  const engine = resolveEngine(config.resizeEngine);
  if (engine.note) log.warn(engine.note);
  const outputFolder = resolve(config.outputFolder);
  await checkListPlacement(config).catch((err: unknown) => exitOnCliError(() => {
    throw err;
  }));
  process.once('SIGINT', () => {
    // As img2dataset: drop the shard inputs and stop; unfinished shards never reach final names.
    killWorkers();
    // bullmq: queued shards are withdrawn first, or workers would start on deleted inputs.
    void (bullmq?.cancelQueuedShards() ?? Promise.resolve())
      .then(() => rm(join(outputFolder, '_tmp'), { recursive: true, force: true }))
      .finally(() => process.exit(130));
  });
  // One run per output folder: a second one would delete this one's _tmp shard inputs.
  await lockOutputOrExit(outputFolder);
  try {
    const { summary, failedShards, skippedShards, rejectedLines } = await downloadImages(config);
    log.info(summary.format());
    if (skippedShards > 0) log.info(`shards already finished and skipped: ${skippedShards}`);
    if (rejectedLines > 0) log.info(`input lines that could not be read (named in the warnings above): ${rejectedLines}`);
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
