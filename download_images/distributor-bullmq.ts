// --distributor bullmq: the coordinator side of scale-out. One BullMQ job per shard on a Redis
// queue; `download_images/worker.ts` processes them on any number of machines that see the same
// output folder. The coordinator only coordinates (as img2dataset's driver with a cluster
// distributor): it cuts the inputs into shard files under `<out>/_tmp`, queues them, follows
// progress and results through QueueEvents, and returns the same callbacks as the
// multiprocessing distributor so run.ts prints the same lines and summary.
//
// Retries: a job gets 1 + --max-shard-retry attempts (the multiprocessing distributor's extra
// passes); a worker killed mid-shard is not an attempt: BullMQ's stalled check hands the job to
// another worker after the lock runs out.
import { createHash, randomBytes } from 'node:crypto';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, relative } from 'node:path';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { TEMP_PREFIX } from '../lib/atomic-file.ts';
import { errorMessage, log } from '../lib/log.ts';
import { Wakeup } from '../lib/wakeup.ts';
import type { DistributeOptions, DistributeResult } from './distributor.ts';
import type { DownloadConfig } from './options.ts';
import type { InputShard } from './reader.ts';
import type { ShardStatsJson } from './stats.ts';

/** What a job carries: everything a worker needs besides --redis-url and --output-folder. */
export interface ShardJobData {
  /** The coordinator's absolute output folder (for messages; workers may mount it elsewhere). */
  outputFolder: string;
  /** Marks the run: `<out>/_tmp/<RUN_MARKER_PREFIX><runId>` exists while it lasts. */
  runId: string;
  shardId: number;
  /** The shard's input folder relative to the output folder (`_tmp/<id>`). */
  shardPath: string;
  rows: number;
  /** encodeConfig'd: job data travels as JSON, which has no Infinity (--max-image-area inf). */
  config: WireConfig;
}

export type WireConfig = Record<string, unknown>;

export function encodeConfig(config: DownloadConfig): WireConfig {
  return JSON.parse(JSON.stringify(config, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? { $number: String(v) } : v))) as WireConfig;
}

export function decodeConfig(wire: WireConfig): DownloadConfig {
  return JSON.parse(JSON.stringify(wire), (_k, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (v as { $number?: unknown }).$number === 'string'
      ? Number((v as { $number: string }).$number)
      : v,
  ) as DownloadConfig;
}

export interface ShardJobResult {
  stats: ShardStatsJson;
  /** host:pid of the worker that returned it. */
  worker: string;
  /** The shard was already committed by another attempt; these are that attempt's stats. */
  alreadyDone: boolean;
}

/** Cumulative counts of the current attempt, sent as job progress. */
export interface ShardJobProgress {
  ok: number;
  failed: number;
  bytes: number;
}

export const RUN_MARKER_PREFIX = '.bullmq-run-';
/** Workers stage a shard in `<out>/.tmp-bullmq-<shard>-<random>/`; prepareOutput removes leftovers. */
export const STAGING_PREFIX = `${TEMP_PREFIX}bullmq-`;

/** Same output folder + shard -> same job id, so a rerun finds its earlier jobs instead of adding twins. */
export function shardJobId(outputFolder: string, shardId: number): string {
  return `${createHash('sha1').update(outputFolder).digest('hex').slice(0, 16)}-${shardId}`;
}

/** BullMQ connection options; ioredis must retry forever for the blocking worker connection. */
export function bullConnection(url: string): { url: string; maxRetriesPerRequest: null } {
  return { url, maxRetriesPerRequest: null };
}

/** One PING with no reconnects, so a wrong URL fails in seconds instead of retrying forever. */
export async function checkRedis(url: string, timeoutMs = 5000): Promise<void> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: timeoutMs, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    throw new Error(`cannot reach Redis at ${url}: ${errorMessage(err)}`);
  } finally {
    client.disconnect();
  }
}

export function workerName(): string {
  return `${hostname()}:${process.pid}`;
}

interface Running {
  queue: Queue;
  pending: Map<string, InputShard>;
}
let running: Running | null = null;

/**
 * SIGINT path: removes this run's jobs that no worker has started, so workers do not pick up
 * shards whose input is about to be deleted. Started ones finish or fail on their own.
 */
export async function cancelQueuedShards(): Promise<void> {
  const r = running;
  if (!r) return;
  await Promise.all(
    [...r.pending.keys()].map(async (id) => {
      const job = await r.queue.getJob(id);
      const state = job ? await job.getState() : 'unknown';
      if (job && state !== 'active' && state !== 'completed' && state !== 'failed') await job.remove().catch(() => {});
    }),
  ).catch(() => {});
  await r.queue.close().catch(() => {});
}

export interface BullmqOptions extends DistributeOptions {
  /** How often a slice of the unfinished jobs is checked directly, in case an event was missed. */
  reconcileMs?: number;
  /** How long without any worker on the queue before the coordinator says so. */
  noWorkerWarnMs?: number;
}

export async function distributeBullmq(shards: AsyncIterable<InputShard>, o: BullmqOptions): Promise<DistributeResult> {
  const { config, outputFolder } = o;
  const url = config.redisUrl;
  if (!url) throw new Error('--distributor bullmq needs --redis-url');
  await checkRedis(url);
  const connection = bullConnection(url);
  const queue = new Queue<ShardJobData, ShardJobResult>(config.queueName, { connection });
  const events = new QueueEvents(config.queueName, { connection });
  queue.on('error', (err) => log.warn(`redis (queue): ${errorMessage(err)}`));
  events.on('error', (err) => log.warn(`redis (events): ${errorMessage(err)}`));
  // Listening before the first job is added, so no event of this run is missed.
  await events.waitUntilReady();
  await queue.waitUntilReady();

  const runId = randomBytes(8).toString('hex');
  const tmpDir = join(outputFolder, '_tmp');
  await writeFile(join(tmpDir, `${RUN_MARKER_PREFIX}${runId}`), `${workerName()}\n`);

  const pending = new Map<string, InputShard>();
  running = { queue, pending };
  const shown = new Map<string, ShardJobProgress>();
  const failed: InputShard[] = [];
  let readerDone = false;
  let readerError: unknown = null;
  const wakeup = new Wakeup();
  const notify = (): void => wakeup.notify();

  // Counts only what goes beyond the most this shard has shown, so a redone shard is not counted twice.
  const advance = (id: string, p: ShardJobProgress): void => {
    const before = shown.get(id) ?? { ok: 0, failed: 0, bytes: 0 };
    const d = { ok: Math.max(0, p.ok - before.ok), failed: Math.max(0, p.failed - before.failed), bytes: Math.max(0, p.bytes - before.bytes) };
    shown.set(id, { ok: before.ok + d.ok, failed: before.failed + d.failed, bytes: before.bytes + d.bytes });
    if (d.ok + d.failed + d.bytes > 0) o.onProgress?.(d.ok, d.failed, d.bytes);
  };
  const finishOk = (id: string, result: ShardJobResult): void => {
    const shard = pending.get(id);
    if (!shard) return;
    pending.delete(id);
    const s = result.stats;
    advance(id, { ok: s.successes, failed: s.count - s.successes, bytes: shown.get(id)?.bytes ?? 0 });
    shown.delete(id);
    o.onShardDone?.(shard, s);
    notify();
  };
  const finishFailed = (id: string, reason: string): void => {
    const shard = pending.get(id);
    if (!shard) return;
    pending.delete(id);
    shown.delete(id);
    log.warn(`shard ${shard.shardId} failed with error ${reason}`);
    o.onShardFailed?.(shard, reason);
    failed.push(shard);
    notify();
  };
  const parseResult = (v: unknown): ShardJobResult | null => {
    const r = typeof v === 'string' ? (JSON.parse(v) as unknown) : v;
    return r && typeof r === 'object' && 'stats' in r ? (r as ShardJobResult) : null;
  };
  /** Looks the job up directly: the source of truth when events are missed or ambiguous. */
  const reconcile = async (id: string): Promise<void> => {
    const job = await queue.getJob(id);
    if (!job) return finishFailed(id, 'the job disappeared from the queue');
    const state = await job.getState();
    if (state === 'completed') {
      const r = parseResult(job.returnvalue);
      if (r) finishOk(id, r);
      else finishFailed(id, 'the job completed without stats');
    } else if (state === 'failed') finishFailed(id, job.failedReason || 'failed');
  };

  events.on('progress', ({ jobId, data }) => {
    if (pending.has(jobId) && data && typeof data === 'object') advance(jobId, data as unknown as ShardJobProgress);
  });
  events.on('completed', ({ jobId, returnvalue }) => {
    if (!pending.has(jobId)) return;
    try {
      const r = parseResult(returnvalue);
      if (r) return finishOk(jobId, r);
    } catch {
      // fall through to a direct look-up
    }
    void reconcile(jobId).catch(() => {});
  });
  // Also sent for attempts that will be retried: only the job's state says whether it is final.
  events.on('failed', ({ jobId }) => {
    if (pending.has(jobId)) void reconcile(jobId).catch(() => {});
  });

  const enqueue = async (shard: InputShard): Promise<void> => {
    const id = shardJobId(outputFolder, shard.shardId);
    const existing = await queue.getJob(id);
    if (existing) {
      const state = await existing.getState();
      if (state === 'active') {
        // A worker is on it from an earlier, interrupted run: follow that job rather than race it.
        log.info(`shard ${shard.shardId}: job ${id} is already being processed; following it`);
        pending.set(id, shard);
        return;
      }
      // Finished or queued by an earlier run: replaced, so this run's inputs and settings are used.
      try {
        await existing.remove();
      } catch {
        log.info(`shard ${shard.shardId}: job ${id} was taken by a worker meanwhile; following it`);
        pending.set(id, shard);
        return;
      }
    }
    const data: ShardJobData = {
      outputFolder,
      runId,
      shardId: shard.shardId,
      shardPath: relative(outputFolder, shard.path),
      rows: shard.rows,
      config: encodeConfig(config),
    };
    await queue.add('shard', data, {
      jobId: id,
      attempts: 1 + Math.max(0, config.maxShardRetry),
      // Kept long enough for this coordinator to read the result; a rerun replaces them anyway.
      removeOnComplete: { age: 7 * 24 * 3600 },
      removeOnFail: { age: 7 * 24 * 3600 },
    });
    // Only now: the periodic check would take a job not yet added for a vanished one. An event
    // that came before this line is made up for by that check.
    pending.set(id, shard);
  };

  const pump = (async () => {
    try {
      for await (const s of shards) await enqueue(s);
    } catch (err) {
      readerError = err;
    } finally {
      readerDone = true;
      notify();
    }
  })();

  if (config.processesCount > 1) log.info('--processes-count is not used with --distributor bullmq: each worker sets its own --concurrency');
  log.info(`queue "${config.queueName}" on ${redactUrl(url)}: start workers with\n  npx tsx download_images/worker.ts --redis-url ${redactUrl(url)} --queue-name ${config.queueName} --output-folder ${outputFolder}`);

  const reconcileMs = o.reconcileMs ?? 3000;
  const noWorkerWarnMs = o.noWorkerWarnMs ?? 30_000;
  let cursor = 0;
  let lastWorkerSeen = Date.now();
  let warned = false;
  const timer = setInterval(() => {
    void (async () => {
      // A slice at a time: a run can have tens of thousands of shards.
      const ids = [...pending.keys()];
      if (ids.length === 0) return;
      cursor %= ids.length;
      const slice = ids.slice(cursor, cursor + 100);
      cursor += slice.length;
      await Promise.all(slice.map((id) => reconcile(id)));
      if ((await queue.getWorkersCount()) > 0) {
        lastWorkerSeen = Date.now();
        warned = false;
      } else if (!warned && Date.now() - lastWorkerSeen > noWorkerWarnMs) {
        warned = true;
        log.warn(`no worker is connected to queue "${config.queueName}"; ${pending.size} shard(s) are waiting`);
      }
    })().catch((err: unknown) => log.warn(`checking jobs: ${errorMessage(err)}`));
  }, reconcileMs);

  try {
    for (;;) {
      if (readerError) break;
      if (readerDone && pending.size === 0) break;
      await wakeup.wait();
    }
    await pump;
    if (readerError) {
      await cancelQueuedShards();
      throw readerError;
    }
  } finally {
    clearInterval(timer);
    running = null;
    await events.close().catch(() => {});
    await queue.close().catch(() => {});
  }
  // Staging folders of attempts that were killed and never taken over (their jobs failed).
  for (const name of await readdir(outputFolder)) {
    if (name.startsWith(STAGING_PREFIX)) await rm(join(outputFolder, name), { recursive: true, force: true });
  }
  if (failed.length > 0) log.warn(`${failed.length} shards still failed after ${config.maxShardRetry} retries: rerun the same command to redo them`);
  return { failed };
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return url;
  }
}
