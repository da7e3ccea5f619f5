// What a BullMQ coordinator and its workers share, whatever the stage: checking and reaching Redis,
// job ids, the wire format of job data, and the names of the run marker and staging folders.
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import { TEMP_PREFIX } from '../atomic-file.ts';
import { errorMessage } from '../log.ts';

/** `<marker folder>/<RUN_MARKER_PREFIX><runId>` exists while the run that queued a job lasts. */
export const RUN_MARKER_PREFIX = '.bullmq-run-';
/** Workers build an item in `<out>/.tmp-bullmq-<item>-<random>/`; a leftover is removed as any `.tmp-` one. */
export const STAGING_PREFIX = `${TEMP_PREFIX}bullmq-`;

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

export function workerName(): string {
  return `${hostname()}:${process.pid}`;
}

/** Same output folder + item -> same job id, so a rerun finds its earlier jobs instead of adding twins. */
export function jobIdFor(outputFolder: string, itemId: string): string {
  return `${createHash('sha1').update(outputFolder).digest('hex').slice(0, 16)}-${itemId}`;
}

/** Job data travels as JSON, which has no Infinity or NaN (download_images' --max-image-area inf). */
export type Wire = Record<string, unknown>;

export function toWire(value: object): Wire {
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? { $number: String(v) } : v))) as Wire;
}

export function fromWire<T>(wire: Wire): T {
  return JSON.parse(JSON.stringify(wire), (_k, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (v as { $number?: unknown }).$number === 'string'
      ? Number((v as { $number: string }).$number)
      : v,
  ) as T;
}

/** Counts a worker reports while it works on an item (samples done, failed, bytes...), cumulative per attempt. */
export type Counters = Record<string, number>;

/** What every job carries besides the stage's own payload. */
export interface JobEnvelope {
  /** The coordinator's absolute output folder (for messages; workers may mount it elsewhere). */
  outputFolder: string;
  /** The run marker, relative to the output folder: a worker that does not see it is pointed elsewhere. */
  runMarker: string;
  /** The item's name in logs (a shard or partition name). */
  name: string;
  /** The stage's description of the item, through toWire. */
  payload: Wire;
}

export interface JobResult {
  /** The stage's result, through toWire. */
  result: Wire;
  /** host:pid of the worker that returned it. */
  worker: string;
  /** The item was already committed by another attempt; this is that attempt's result. */
  alreadyDone: boolean;
}
