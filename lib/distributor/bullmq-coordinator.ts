// The coordinator side of scale-out over BullMQ, for any stage: one job per work item (a
// download_images shard, an inference partition) on a Redis queue; workers (bullmq-worker.ts) on
// any number of machines that see the same output folder run them. The coordinator only
// coordinates: it queues the items as they come, follows progress and results through
// QueueEvents (checking job states directly now and then, in case an event was missed), and
// resolves when every item is done or has failed for good.
//
// Retries: a job gets `attempts` tries; a worker killed mid-item is not a try: BullMQ's stalled
// check hands the job to another worker after the lock runs out. Items that are already finished
// are the stage's to leave out (they are never queued); a worker also skips an item it finds
// committed, so a rerun after any crash redoes only what is missing.
import { randomBytes } from 'node:crypto';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Queue, QueueEvents } from 'bullmq';
import { errorMessage, log } from '../log.ts';
import { Wakeup } from '../wakeup.ts';
import {
  bullConnection, checkRedis, fromWire, jobIdFor, redactUrl, RUN_MARKER_PREFIX, STAGING_PREFIX, toWire, workerName,
  type Counters, type JobEnvelope, type JobResult,
} from './redis.ts';

export interface CoordinatorOptions<Item, Result> {
  redisUrl: string;
  queueName: string;
  /** Absolute output folder. */
  outputFolder: string;
  /** Folder (inside the output folder) for the run marker; it must exist. */
  markerFolder: string;
  /** What an item is called in logs: 'shard', 'partition'. */
  noun: string;
  /** Unique within the output folder; part of the job id. */
  itemId(item: Item): string;
  /** The item's name in logs. */
  itemName(item: Item): string;
  /** Everything a worker needs to do the item, besides its --redis-url and --output-folder. */
  payload(item: Item): object;
  /** Tries per job (1 + retries). */
  attempts: number;
  /** The command that starts a worker, printed for the user. */
  workerCommand: string;
  /** Counts gained since the last call, from the workers' progress reports. */
  onProgress?(delta: Counters): void;
  /** The counts a finished item's result stands for, so progress ends exact even if reports were missed. */
  resultCounters?(result: Result): Counters;
  onItemDone?(item: Item, result: Result): void;
  onItemFailed?(item: Item, reason: string): void;
  /** How often a slice of the unfinished jobs is checked directly, in case an event was missed. */
  reconcileMs?: number;
  /** How long without any worker on the queue before the coordinator says so. */
  noWorkerWarnMs?: number;
}

export interface CoordinatorResult<Item> {
  /** Items still failed after every try. */
  failed: Item[];
}

interface Running {
  queue: Queue;
  pending: Map<string, unknown>;
  marker: string;
}
const running = new Set<Running>();

/**
 * SIGINT path: removes the jobs of this process's runs that no worker has started (their inputs
 * may be about to go) and the run markers, so workers refuse what is left. Started ones finish or
 * fail on their own.
 */
export async function cancelQueuedJobs(): Promise<void> {
  await Promise.all(
    [...running].map(async (r) => {
      await Promise.all(
        [...r.pending.keys()].map(async (id) => {
          const job = await r.queue.getJob(id);
          const state = job ? await job.getState() : 'unknown';
          if (job && state !== 'active' && state !== 'completed' && state !== 'failed') await job.remove().catch(() => {});
        }),
      ).catch(() => {});
      await rm(r.marker, { force: true }).catch(() => {});
      await r.queue.close().catch(() => {});
    }),
  );
}

export async function coordinateBullmq<Item, Result>(items: AsyncIterable<Item>, o: CoordinatorOptions<Item, Result>): Promise<CoordinatorResult<Item>> {
  const { outputFolder, queueName } = o;
  await checkRedis(o.redisUrl);
  const connection = bullConnection(o.redisUrl);
  const queue = new Queue<JobEnvelope, JobResult>(queueName, { connection });
  const events = new QueueEvents(queueName, { connection });
  queue.on('error', (err) => log.warn(`redis (queue): ${errorMessage(err)}`));
  events.on('error', (err) => log.warn(`redis (events): ${errorMessage(err)}`));
  // Listening before the first job is added, so no event of this run is missed.
  await events.waitUntilReady();
  await queue.waitUntilReady();

  const marker = join(o.markerFolder, `${RUN_MARKER_PREFIX}${randomBytes(8).toString('hex')}`);
  await writeFile(marker, `${workerName()}\n`);
  const runMarker = relative(outputFolder, marker);

  const pending = new Map<string, Item>();
  const me: Running = { queue, pending, marker };
  running.add(me);
  const shown = new Map<string, Counters>();
  const failed: Item[] = [];
  let readerDone = false;
  let readerError: unknown = null;
  const wakeup = new Wakeup();
  const notify = (): void => wakeup.notify();

  // Counts only what goes beyond the most this item has shown, so a redone item is not counted twice.
  const advance = (id: string, p: Counters): void => {
    const before = shown.get(id) ?? {};
    const now: Counters = { ...before };
    const delta: Counters = {};
    let any = false;
    for (const [k, v] of Object.entries(p)) {
      const d = Math.max(0, v - (before[k] ?? 0));
      now[k] = (before[k] ?? 0) + d;
      delta[k] = d;
      if (d > 0) any = true;
    }
    shown.set(id, now);
    if (any) o.onProgress?.(delta);
  };
  const finishOk = (id: string, r: JobResult): void => {
    const item = pending.get(id);
    if (item === undefined) return;
    pending.delete(id);
    const result = fromWire<Result>(r.result);
    if (o.resultCounters) advance(id, o.resultCounters(result));
    shown.delete(id);
    o.onItemDone?.(item, result);
    notify();
  };
  const finishFailed = (id: string, reason: string): void => {
    const item = pending.get(id);
    if (item === undefined) return;
    pending.delete(id);
    shown.delete(id);
    log.warn(`${o.noun} ${o.itemName(item)} failed with error ${reason}`);
    o.onItemFailed?.(item, reason);
    failed.push(item);
    notify();
  };
  const parseResult = (v: unknown): JobResult | null => {
    const r = typeof v === 'string' ? (JSON.parse(v) as unknown) : v;
    return r && typeof r === 'object' && 'result' in r ? (r as JobResult) : null;
  };
  /** Looks the job up directly: the source of truth when events are missed or ambiguous. */
  const reconcile = async (id: string): Promise<void> => {
    const job = await queue.getJob(id);
    if (!job) return finishFailed(id, 'the job disappeared from the queue');
    const state = await job.getState();
    if (state === 'completed') {
      const r = parseResult(job.returnvalue);
      if (r) finishOk(id, r);
      else finishFailed(id, 'the job completed without a result');
    } else if (state === 'failed') finishFailed(id, job.failedReason || 'failed');
  };

  events.on('progress', ({ jobId, data }) => {
    if (pending.has(jobId) && data && typeof data === 'object') advance(jobId, data as unknown as Counters);
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

  const enqueue = async (item: Item): Promise<void> => {
    const id = jobIdFor(outputFolder, o.itemId(item));
    const name = o.itemName(item);
    const existing = await queue.getJob(id);
    if (existing) {
      const state = await existing.getState();
      if (state === 'active') {
        // A worker is on it from an earlier, interrupted run: follow that job rather than race it.
        log.info(`${o.noun} ${name}: job ${id} is already being processed; following it`);
        pending.set(id, item);
        return;
      }
      // Finished or queued by an earlier run: replaced, so this run's inputs and settings are used.
      try {
        await existing.remove();
      } catch {
        log.info(`${o.noun} ${name}: job ${id} was taken by a worker meanwhile; following it`);
        pending.set(id, item);
        return;
      }
    }
    const data: JobEnvelope = { outputFolder, runMarker, name, payload: toWire(o.payload(item)) };
    await queue.add(o.noun, data, {
      jobId: id,
      attempts: Math.max(1, o.attempts),
      // Kept long enough for this coordinator to read the result; a rerun replaces them anyway.
      removeOnComplete: { age: 7 * 24 * 3600 },
      removeOnFail: { age: 7 * 24 * 3600 },
    });
    // Only now: the periodic check would take a job not yet added for a vanished one. An event
    // that came before this line is made up for by that check.
    pending.set(id, item);
  };

  const pump = (async () => {
    try {
      for await (const item of items) await enqueue(item);
    } catch (err) {
      readerError = err;
    } finally {
      readerDone = true;
      notify();
    }
  })();

  log.info(`queue "${queueName}" on ${redactUrl(o.redisUrl)}: start workers with\n  ${o.workerCommand}`);

  const reconcileMs = o.reconcileMs ?? 3000;
  const noWorkerWarnMs = o.noWorkerWarnMs ?? 30_000;
  let cursor = 0;
  let lastWorkerSeen = Date.now();
  let warned = false;
  const timer = setInterval(() => {
    void (async () => {
      // A slice at a time: a run can have tens of thousands of items.
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
        log.warn(`no worker is connected to queue "${queueName}"; ${pending.size} ${o.noun}(s) are waiting`);
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
      await cancelQueuedJobs();
      throw readerError;
    }
  } finally {
    clearInterval(timer);
    running.delete(me);
    await rm(marker, { force: true }).catch(() => {});
    await events.close().catch(() => {});
    await queue.close().catch(() => {});
  }
  // Staging folders of attempts that were killed and never taken over (their jobs failed).
  for (const name of await readdir(outputFolder)) {
    if (name.startsWith(STAGING_PREFIX)) await rm(join(outputFolder, name), { recursive: true, force: true });
  }
  return { failed };
}
