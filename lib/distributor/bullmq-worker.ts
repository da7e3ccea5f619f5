// The worker side of scale-out over BullMQ, for any stage: takes jobs from the queue and runs the
// stage's handler on each. Start one (or more) per machine; all must see the coordinator's output
// folder (a shared filesystem), each under its own --output-folder path.
//
// An item is built in a private staging folder and moved into the output folder under a Redis
// lock, after checking that no other attempt got there first: a worker that lost its job (paused
// past its lock, then resumed while another worker redid the item) never mixes its files with the
// other attempt's. A SIGKILLed worker's job is taken over by another worker once its lock runs
// out (--lock-duration + --stalled-interval).
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { access, mkdir, readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { CliError } from '../cli.ts';
import { checkQueueName, checkRedisUrl } from './checks.ts';
import { errorMessage, log } from '../log.ts';
import {
  bullConnection, checkRedis, fromWire, redactUrl, STAGING_PREFIX, toWire, workerName,
  type Counters, type JobEnvelope, type JobResult, type Wire,
} from './redis.ts';

/** The flags every queue worker takes; a stage adds its own and names its default queue. */
export function queueWorkerFlags(defaultQueue: string, concurrencyHelp: string) {
  return {
    'redis-url': { type: 'string', required: true, help: 'Redis the coordinator uses, e.g. redis://10.0.0.1:6379' },
    'output-folder': { type: 'string', required: true, help: "The coordinator's --output-folder as this machine sees it" },
    'queue-name': { type: 'string', default: defaultQueue, help: "The coordinator's --queue-name" },
    concurrency: { type: 'int', default: 1, help: concurrencyHelp },
    'lock-duration': { type: 'float', default: 30, help: 'Seconds a job lock lasts; renewed every half of it while the job runs' },
    'stalled-interval': { type: 'float', default: 15, help: "Seconds between checks for jobs whose worker died (their lock ran out); a dead worker's job restarts after about lock-duration + stalled-interval" },
    'max-stalled-count': { type: 'int', default: 2, help: 'Times a job may be taken over from a dead worker before it counts as failed (at least 1)' },
  } as const;
}

export interface QueueWorkerSettings {
  redisUrl: string;
  outputFolder: string;
  queueName: string;
  concurrency: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
}

export function toQueueWorkerSettings(f: {
  redisUrl: string; outputFolder: string; queueName: string; concurrency: number; lockDuration: number; stalledInterval: number; maxStalledCount: number;
}): QueueWorkerSettings {
  checkRedisUrl(f.redisUrl);
  checkQueueName(f.queueName);
  if (f.concurrency < 1) throw new CliError('--concurrency must be at least 1');
  if (!(f.lockDuration >= 1)) throw new CliError('--lock-duration must be at least 1 second');
  if (!(f.stalledInterval > 0)) throw new CliError('--stalled-interval must be positive');
  if (f.maxStalledCount < 1) throw new CliError("--max-stalled-count must be at least 1, or a killed worker's job fails instead of being redone");
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

/** One attempt at one item, as the handler sees it. */
export interface ItemAttempt<Payload> {
  payload: Payload;
  /** The item's name in logs. */
  name: string;
  /** This worker's view of the output folder. */
  outputFolder: string;
  /** An empty folder of this attempt's own, inside the output folder (same filesystem: renames are atomic). */
  staging: string;
  /** Counts the handler raises as it goes; sent to the coordinator as progress. */
  counters: Counters;
}

/** What a stage supplies: how to do, recognise and commit one item. */
export interface ItemHandler<Payload, Result> {
  /** What an item is called in logs: 'shard', 'partition'. */
  noun: string;
  /** The result of an attempt that already committed this item, or null. */
  committed(payload: Payload, outputFolder: string, name: string): Promise<Result | null>;
  /** A few words for the "started" line (e.g. "20 rows"). */
  describe?(payload: Payload): string;
  /** Builds the item's outputs in attempt.staging. */
  process(attempt: ItemAttempt<Payload>): Promise<Result>;
  /** Moves the staged outputs to their final names; runs under the item's lock after committed() said null. */
  commit(attempt: ItemAttempt<Payload>, result: Result): Promise<void>;
  /** After the item is committed (by this attempt or another): e.g. remove its input. */
  afterCommit?(payload: Payload, outputFolder: string): Promise<void>;
  /** The line logged when an item is finished. */
  doneLine(name: string, result: Result, alreadyDone: boolean): string;
  /** Frees what the handler holds (HTTP pools, model sessions). */
  close(): Promise<void>;
}

export interface RunningWorker {
  /** Stops taking jobs and waits for the current ones (release = put them back on the queue now). */
  stop(release?: boolean): Promise<void>;
  /** Resolves when the worker has stopped, with the exit code it suggests. */
  done: Promise<number>;
}

const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A Redis lock with an expiry, so a worker killed mid-commit does not block the item for good. */
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

export async function startQueueWorker<Payload, Result>(s: QueueWorkerSettings, handler: ItemHandler<Payload, Result>): Promise<RunningWorker> {
  await checkRedis(s.redisUrl);
  const me = workerName();
  const noun = handler.noun;
  const redis = new Redis(s.redisUrl, { maxRetriesPerRequest: null });
  redis.on('error', (err) => log.warn(`redis: ${errorMessage(err)}`));
  const active = new Map<string, { job: Job<JobEnvelope, JobResult>; name: string; token: string | undefined; staging: string | null }>();
  let fatal: string | null = null;
  let stopping: Promise<void> | null = null;
  let resolveDone: (code: number) => void = () => {};
  const done = new Promise<number>((r) => (resolveDone = r));

  const processor = async (job: Job<JobEnvelope, JobResult>, token?: string): Promise<JobResult> => {
    const d = job.data;
    const payload = fromWire<Payload>(d.payload);
    const name = d.name;
    const entry = { job, name, token, staging: null as string | null };
    active.set(job.id!, entry);
    const reply = (result: Result, alreadyDone: boolean): JobResult => ({ result: toWire(result as object) as Wire, worker: me, alreadyDone });
    try {
      // The run marker proves this worker sees the coordinator's folder (mount paths may differ).
      if (!(await exists(join(s.outputFolder, d.runMarker)))) {
        if (s.outputFolder === d.outputFolder) {
          throw new UnrecoverableError(`${noun} ${name}: the run that queued it is over (no ${d.runMarker} in ${s.outputFolder})`);
        }
        fatal = `job ${job.id} belongs to output folder ${d.outputFolder}, which is not this worker's --output-folder ${s.outputFolder} (or that is not the same shared folder); stopping`;
        // Back on the queue for a worker that sees the folder, without using up an attempt.
        await job.moveToDelayed(Date.now() + 1000, token);
        void stop(false);
        throw new DelayedError();
      }
      const already = await handler.committed(payload, s.outputFolder, name);
      if (already) {
        log.info(`${noun} ${name}: already done by another attempt; returning its result`);
        await handler.afterCommit?.(payload, s.outputFolder);
        return reply(already, true);
      }
      const detail = handler.describe?.(payload);
      log.info(`${noun} ${name}: started (job ${job.id}, attempt ${job.attemptsStarted}${detail ? `, ${detail}` : ''})`);
      // A dead attempt's staging folder for this item is of no further use.
      for (const n of await readdir(s.outputFolder)) {
        if (n.startsWith(`${STAGING_PREFIX}${name}-`)) await rm(join(s.outputFolder, n), { recursive: true, force: true });
      }
      const staging = join(s.outputFolder, `${STAGING_PREFIX}${name}-${randomBytes(4).toString('hex')}`);
      entry.staging = staging;
      await mkdir(staging, { recursive: true });
      const attempt: ItemAttempt<Payload> = { payload, name, outputFolder: s.outputFolder, staging, counters: {} };
      let sent = '';
      const report = setInterval(() => {
        const now = JSON.stringify(attempt.counters);
        if (now === sent) return;
        sent = now;
        void job.updateProgress({ ...attempt.counters }).catch(() => {});
      }, 500);
      let result: Result;
      try {
        result = await handler.process(attempt);
      } finally {
        clearInterval(report);
      }
      await job.updateProgress({ ...attempt.counters }).catch(() => {});
      const lockKey = `bull:${s.queueName}:commit:${job.id}`;
      const out = await withRedisLock(redis, lockKey, 60_000, async (): Promise<JobResult> => {
        const other = await handler.committed(payload, s.outputFolder, name);
        if (other) return reply(other, true);
        await handler.commit(attempt, result);
        return reply(result, false);
      });
      await handler.afterCommit?.(payload, s.outputFolder);
      log.info(handler.doneLine(name, fromWire<Result>(out.result), out.alreadyDone));
      return out;
    } finally {
      active.delete(job.id!);
      if (entry.staging) await rm(entry.staging, { recursive: true, force: true });
    }
  };

  const worker = new Worker<JobEnvelope, JobResult>(s.queueName, processor, {
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
    if (job && !(err instanceof DelayedError) && err.name !== 'DelayedError') log.warn(`${noun} ${job.data.name}: failed (attempt ${job.attemptsMade}): ${errorMessage(err)}`);
  });
  worker.on('lockRenewalFailed', (ids: string[]) => log.warn(`lost the lock of job(s) ${ids.join(', ')}: another worker may redo them; the first to finish commits`));

  const cleanup = async (): Promise<void> => {
    await handler.close();
    redis.disconnect();
  };

  const stop = (release = false): Promise<void> => {
    if (release) {
      // Put the items in progress back for another worker; this process then exits.
      return (async () => {
        const released = [...active.values()];
        for (const { job, token } of released) {
          await job.moveToWait(token).catch((err: unknown) => log.warn(`job ${job.id}: could not release: ${errorMessage(err)}`));
        }
        // The handlers are still writing into their staging folders: removing them synchronously,
        // then resolving, lets the caller exit (in microtasks) before a write that finds its
        // folder gone can raise an error.
        for (const { name, staging } of released) {
          if (staging) rmSync(staging, { recursive: true, force: true });
          log.info(`${noun} ${name}: released to the queue`);
        }
        // Not worker.close(): a close already under way waits for the items; the caller exits now.
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
  return {
    stop,
    done: done.then((code) => {
      if (fatal) log.error(fatal);
      return code;
    }),
  };
}

/**
 * A worker command's life: start, then SIGTERM / Ctrl-C finishes the items in progress and exits;
 * a second signal puts them back on the queue at once (exit 130). Resolves with the exit code,
 * which the caller must pass to process.exit() at once (released items are still being written).
 */
export async function runQueueWorker<Payload, Result>(s: QueueWorkerSettings, handler: ItemHandler<Payload, Result>): Promise<number> {
  let w: RunningWorker;
  try {
    w = await startQueueWorker(s, handler);
  } catch (err) {
    await handler.close().catch(() => {});
    log.error(errorMessage(err));
    return 1;
  }
  let signals = 0;
  const onSignal = (sig: string): void => {
    signals++;
    if (signals === 1) {
      log.info(`${sig}: finishing the ${handler.noun}s in progress, then exiting (send it again to put them back on the queue now)`);
      void w.stop(false);
    } else if (signals === 2) {
      log.info(`${sig}: putting the ${handler.noun}s in progress back on the queue`);
      void w.stop(true);
    } else process.exit(130);
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  return w.done;
}
