// A BullMQ worker for `download_images/run.ts --distributor bullmq`: takes shard jobs from the
// queue and runs each through the same processShard as the multiprocessing workers. Start one (or
// more) per machine; all must see the coordinator's output folder (a shared filesystem).
//
// A shard is built in a private staging folder and moved into the output folder under a Redis
// lock, after checking that no other attempt got there first: a worker that lost its job (paused
// past its lock, then resumed while another worker redid the shard) never mixes its files with
// the other attempt's. A SIGKILLed worker's job is taken over by another worker once its lock
// runs out (--lock-duration + --stalled-interval).
import { randomBytes } from 'node:crypto';
import { access, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { CliError, defineCli, exitOnCliError, isMainModule } from '../lib/cli.ts';
import { errorMessage, log } from '../lib/log.ts';
import {
  bullConnection, checkRedis, decodeConfig, redactUrl, RUN_MARKER_PREFIX, STAGING_PREFIX, workerName,
  type ShardJobData, type ShardJobProgress, type ShardJobResult,
} from './distributor-bullmq.ts';
import { createSampleDeps } from './distributor.ts';
import { checkQueueName, checkRedisUrl, type DownloadConfig } from './options.ts';
import { shardName } from './reader.ts';
import { resolveEngine } from './resizer.ts';
import { processShard, removeShardInput, type SampleDeps } from './sample-pipeline.ts';
import { commitShard, statsPath } from './shard-state.ts';
import { loggerLine, type ShardStatsJson } from './stats.ts';
import type { PendingFile } from './writers.ts';

export const WORKER_FLAGS = {
  'redis-url': { type: 'string', required: true, help: 'Redis the coordinator uses, e.g. redis://10.0.0.1:6379' },
  'output-folder': { type: 'string', required: true, help: "The coordinator's --output-folder as this machine sees it" },
  'queue-name': { type: 'string', default: 'download_images', help: "The coordinator's --queue-name" },
  concurrency: { type: 'int', default: 1, help: 'Shards processed at once by this process (each with the run\'s --thread-count downloads)' },
  'lock-duration': { type: 'float', default: 30, help: 'Seconds a job lock lasts; renewed every half of it while the shard runs' },
  'stalled-interval': { type: 'float', default: 15, help: "Seconds between checks for jobs whose worker died (their lock ran out); a dead worker's shard restarts after about lock-duration + stalled-interval" },
  'max-stalled-count': { type: 'int', default: 2, help: 'Times a shard may be taken over from a dead worker before it counts as failed (at least 1)' },
} as const;

export const workerCli = defineCli({
  command: 'npx tsx download_images/worker.ts',
  summary: 'Process download_images shards from a BullMQ queue (the workers of --distributor bullmq).',
  flags: WORKER_FLAGS,
  epilog: `
Start the coordinator on one machine, then any number of workers wherever the output folder is shared:
  npx tsx download_images/run.ts --url_list in.parquet --input_format parquet --output_folder /shared/out \\
    --distributor bullmq --redis-url redis://10.0.0.1:6379
  npx tsx download_images/worker.ts --redis-url redis://10.0.0.1:6379 --output-folder /shared/out
SIGTERM or Ctrl-C finishes the shards in progress and exits; a second one puts them back on the queue at once.`,
});

export interface WorkerSettings {
  redisUrl: string;
  outputFolder: string;
  queueName: string;
  concurrency: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
}

export function toWorkerSettings(f: ReturnType<typeof workerCli.parse>['flags']): WorkerSettings {
  checkRedisUrl(f.redisUrl);
  checkQueueName(f.queueName);
  if (f.concurrency < 1) throw new CliError('--concurrency must be at least 1');
  if (!(f.lockDuration >= 1)) throw new CliError('--lock-duration must be at least 1 second');
  if (!(f.stalledInterval > 0)) throw new CliError('--stalled-interval must be positive');
  if (f.maxStalledCount < 1) throw new CliError('--max-stalled-count must be at least 1, or a killed worker\'s shard fails instead of being redone');
  return {
    redisUrl: f.redisUrl,
    outputFolder: resolve(f.outputFolder),
    queueName: f.queueName,
    concurrency: f.concurrency,
    lockDurationMs: Math.round(f.lockDuration * 1000),
    stalledIntervalMs: Math.round(f.stalledInterval * 1000),
    maxStalledCount: f.maxStalledCount,
  };
}

const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

async function readStats(path: string): Promise<ShardStatsJson | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as ShardStatsJson;
  } catch {
    return null;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A Redis lock with an expiry, so a worker killed mid-commit does not block the shard for good. */
async function withRedisLock<T>(redis: Redis, key: string, ttlMs: number, fn: () => Promise<T>): Promise<T> {
  const token = randomBytes(8).toString('hex');
  const deadline = Date.now() + 10 * ttlMs;
  while ((await redis.set(key, token, 'PX', ttlMs, 'NX')) !== 'OK') {
    if (Date.now() > deadline) throw new Error(`could not take the commit lock ${key}`);
    await sleep(100);
  }
  try {
    return await fn();
  } finally {
    await redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0", 1, key, token).catch(() => {});
  }
}

export interface RunningWorker {
  /** Stops taking jobs and waits for the current ones (release = put them back on the queue now). */
  stop(release?: boolean): Promise<void>;
  /** Resolves when the worker has stopped, with the exit code it suggests. */
  done: Promise<number>;
}

export async function startWorker(s: WorkerSettings): Promise<RunningWorker> {
  await checkRedis(s.redisUrl);
  const me = workerName();
  const redis = new Redis(s.redisUrl, { maxRetriesPerRequest: null });
  redis.on('error', (err) => log.warn(`redis: ${errorMessage(err)}`));
  // One HTTP pool per distinct download setting (normally one per run).
  const depsBySetting = new Map<string, Promise<SampleDeps>>();
  const depsFor = (config: DownloadConfig): Promise<SampleDeps> => {
    const key = JSON.stringify(config);
    let d = depsBySetting.get(key);
    if (!d) {
      d = createSampleDeps(config);
      depsBySetting.set(key, d);
    }
    return d;
  };
  const active = new Map<string, { job: Job<ShardJobData, ShardJobResult>; name: string; token: string | undefined; staging: string | null }>();
  let fatal: string | null = null;
  let stopping: Promise<void> | null = null;
  let resolveDone: (code: number) => void = () => {};
  const done = new Promise<number>((r) => (resolveDone = r));

  const processor = async (job: Job<ShardJobData, ShardJobResult>, token?: string): Promise<ShardJobResult> => {
    const d = job.data;
    const config = decodeConfig(d.config);
    const name = shardName(d.shardId, config.oomShardCount);
    const entry = { job, name, token, staging: null as string | null };
    active.set(job.id!, entry);
    try {
      // The run marker proves this worker sees the coordinator's folder (mount paths may differ).
      if (!(await exists(join(s.outputFolder, '_tmp', `${RUN_MARKER_PREFIX}${d.runId}`)))) {
        if (s.outputFolder === d.outputFolder) {
          throw new UnrecoverableError(`shard ${name}: the run that queued it is over (no ${RUN_MARKER_PREFIX}${d.runId} in ${s.outputFolder}/_tmp)`);
        }
        fatal = `job ${job.id} belongs to output folder ${d.outputFolder}, which is not this worker's --output-folder ${s.outputFolder} (or that is not the same shared folder); stopping`;
        // Back on the queue for a worker that sees the folder, without using up an attempt.
        await job.moveToDelayed(Date.now() + 1000, token);
        void stop(false);
        throw new DelayedError();
      }
      const final = statsPath(s.outputFolder, name);
      const already = await readStats(final);
      if (already) {
        log.info(`shard ${name}: already done by another attempt; returning its stats`);
        await removeShardInput({ shardId: d.shardId, path: join(s.outputFolder, d.shardPath) });
        return { stats: already, worker: me, alreadyDone: true };
      }
      log.info(`shard ${name}: started (job ${job.id}, attempt ${job.attemptsStarted}, ${d.rows} rows)`);
      // A dead attempt's staging folder for this shard is of no further use.
      for (const n of await readdir(s.outputFolder)) {
        if (n.startsWith(`${STAGING_PREFIX}${name}-`)) await rm(join(s.outputFolder, n), { recursive: true, force: true });
      }
      const staging = join(s.outputFolder, `${STAGING_PREFIX}${name}-${randomBytes(4).toString('hex')}`);
      entry.staging = staging;
      await mkdir(staging, { recursive: true });
      const counts: ShardJobProgress = { ok: 0, failed: 0, bytes: 0 };
      let sent = 0;
      const report = setInterval(() => {
        const n = counts.ok + counts.failed;
        if (n === sent) return;
        sent = n;
        void job.updateProgress({ ...counts }).catch(() => {});
      }, 500);
      let stats: ShardStatsJson;
      try {
        stats = await processShard(
          { shardId: d.shardId, path: join(s.outputFolder, d.shardPath) },
          {
            config,
            deps: await depsFor(config),
            outputFolder: staging,
            onSample: (ok, bytes) => {
              if (ok) counts.ok++;
              else counts.failed++;
              counts.bytes += bytes;
            },
          },
        );
      } finally {
        clearInterval(report);
      }
      await job.updateProgress({ ...counts }).catch(() => {});
      const lockKey = `bull:${s.queueName}:shard-commit:${job.id}`;
      const result = await withRedisLock(redis, lockKey, 60_000, async (): Promise<ShardJobResult> => {
        const other = await readStats(final);
        if (other) return { stats: other, worker: me, alreadyDone: true };
        const files: PendingFile[] = [];
        for (const e of await readdir(staging, { withFileTypes: true })) {
          if (e.name === `${name}_stats.json`) continue;
          files.push({ temp: join(staging, e.name), final: join(s.outputFolder, e.name), isDir: e.isDirectory() });
        }
        await commitShard(s.outputFolder, name, files, stats);
        return { stats, worker: me, alreadyDone: false };
      });
      await removeShardInput({ shardId: d.shardId, path: join(s.outputFolder, d.shardPath) });
      const st = result.stats;
      log.info(`${loggerLine('worker', st, st.duration)} (shard ${name}${result.alreadyDone ? ', already committed by another attempt' : ''})`);
      return result;
    } finally {
      active.delete(job.id!);
      if (entry.staging) await rm(entry.staging, { recursive: true, force: true });
    }
  };

  const worker = new Worker<ShardJobData, ShardJobResult>(s.queueName, processor, {
    connection: bullConnection(s.redisUrl),
    name: me,
    concurrency: s.concurrency,
    lockDuration: s.lockDurationMs,
    stalledInterval: s.stalledIntervalMs,
    maxStalledCount: s.maxStalledCount,
    autorun: false,
  });
  worker.on('error', (err) => log.warn(`worker: ${errorMessage(err)}`));
  worker.on('failed', (job, err) => {
    if (job && !(err instanceof DelayedError) && err.name !== 'DelayedError') log.warn(`shard ${job.data.shardId}: failed (attempt ${job.attemptsMade}): ${errorMessage(err)}`);
  });
  worker.on('lockRenewalFailed', (ids: string[]) => log.warn(`lost the lock of job(s) ${ids.join(', ')}: another worker may redo them; the first to finish commits`));

  const cleanup = async (): Promise<void> => {
    for (const d of depsBySetting.values()) await (await d.catch(() => null))?.close?.();
    redis.disconnect();
  };

  const stop = (release = false): Promise<void> => {
    if (release) {
      // Put the shards in progress back for another worker; this process then exits.
      return (async () => {
        for (const { job, name, token, staging } of [...active.values()]) {
          await job.moveToWait(token).catch((err: unknown) => log.warn(`job ${job.id}: could not release: ${errorMessage(err)}`));
          if (staging) await rm(staging, { recursive: true, force: true });
          log.info(`shard ${name}: released to the queue`);
        }
        // Not worker.close(): a close already under way waits for the shards; this process just exits.
        resolveDone(130);
      })();
    }
    stopping ??= (async () => {
      await worker.close();
      await cleanup().catch(() => {});
      resolveDone(fatal ? 2 : 0);
    })();
    return stopping;
  };

  await worker.waitUntilReady();
  void worker.run().catch((err: unknown) => {
    fatal ??= errorMessage(err);
    void stop(false);
  });
  log.info(`worker ${me} on queue "${s.queueName}" at ${redactUrl(s.redisUrl)}, output folder ${s.outputFolder}, concurrency ${s.concurrency}`);
  // The coordinator's --resize-engine fast or exact falls back to sharp on a machine without the addon.
  const engine = resolveEngine('fast');
  if (engine.note) log.warn(engine.note);
  return { stop, done: done.then((code) => {
    if (fatal) log.error(fatal);
    return code;
  }) };
}

async function main(): Promise<void> {
  const { flags } = workerCli.run();
  const settings: WorkerSettings = exitOnCliError(() => toWorkerSettings(flags));
  let w: RunningWorker;
  try {
    w = await startWorker(settings);
  } catch (err) {
    log.error(errorMessage(err));
    process.exit(1);
  }
  let signals = 0;
  const onSignal = (sig: string): void => {
    signals++;
    if (signals === 1) {
      log.info(`${sig}: finishing the shards in progress, then exiting (send it again to put them back on the queue now)`);
      void w.stop(false);
    } else if (signals === 2) {
      log.info(`${sig}: putting the shards in progress back on the queue`);
      void w.stop(true);
    } else process.exit(130);
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.exit(await w.done);
}

if (isMainModule(import.meta.url)) await main();
