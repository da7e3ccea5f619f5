// One machine, several worker processes: items (download_images' shards) are handed to child
// processes, one at a time per child; a failed item is retried in extra passes at the end (as
// img2dataset's pool), a child that dies is replaced and its item counts as failed. Child
// processes rather than worker threads because each child has its own libuv thread pool, its own
// native pools, and a crash or out-of-memory kill takes down one worker and its current item, not
// the run.
//
// The parent side is distributeToProcesses(); a stage's worker module calls runChildWorker() with
// its handler when started with `--worker` (it is forked so).
import { fork, type ChildProcess } from 'node:child_process';
import { errorMessage, log } from '../log.ts';
import { Wakeup } from '../wakeup.ts';
import type { Counters } from './redis.ts';

type ToChild = { type: 'init'; init: unknown } | { type: 'item'; item: unknown } | { type: 'exit' };
type FromChild =
  | { type: 'ready' }
  | { type: 'fatal'; error: string }
  | { type: 'progress'; counters: Counters }
  | { type: 'done'; result: unknown }
  | { type: 'failed'; error: string };

export interface ProcessPoolOptions<Item, Result> {
  /** Absolute path of the module that calls runChildWorker() when its argv[2] is `--worker`. */
  workerModule: string;
  /** Handed to each child's handler.init() before any item. */
  init: unknown;
  processes: number;
  /** Extra passes over the items that failed. */
  maxRetry: number;
  /** What an item is called in logs: 'shard'. */
  noun: string;
  itemLabel(item: Item): string;
  /** Environment added to the children's. */
  env?: Record<string, string>;
  /** V8's starting old-generation size in the children (MB), unless this process sets its own. */
  initialHeapMb?: number;
  /** Counts gained since the last call, from the children's progress reports. */
  onProgress?(delta: Counters): void;
  onItemDone?(item: Item, result: Result): void;
  onItemFailed?(item: Item, error: string): void;
  /** Called once every child has exited, if some died unasked (to remove what they left). */
  afterWorkersLost?(): Promise<void>;
}

/** Node flags that make a child run TypeScript the way this process does, and its heap start size. */
function childExecArgv(initialHeapMb: number | undefined): string[] {
  const keep: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (/^--(import|require|loader|experimental-loader)$/.test(a) && i + 1 < argv.length) keep.push(a, argv[++i]!);
    else if (/^--(import|require|loader|experimental-loader)=/.test(a)) keep.push(a);
    // `node --cpu-prof --cpu-prof-dir=DIR` profiles the whole process tree (NODE_OPTIONS refuses it).
    else if (/^--cpu-prof(-dir=|-interval=|$)/.test(a)) keep.push(a);
  }
  if (!keep.some((a) => a.includes('tsx'))) keep.push('--import', 'tsx');
  const own = argv.find((a) => a.startsWith('--initial-heap-size'));
  if (own) keep.push(own);
  else if (initialHeapMb) keep.push(`--initial-heap-size=${initialHeapMb}`);
  return keep;
}

/** Children that died without being asked to (crash, OOM kill). */
let workersLost = 0;

class ChildWorker {
  private child: ChildProcess;
  private pending: { resolve: (m: FromChild) => void } | null = null;
  private exited = false;
  private closing = false;
  private fatal: string | null = null;
  private readonly ready: Promise<void>;

  constructor(o: ProcessPoolOptions<unknown, unknown>) {
    this.child = fork(o.workerModule, ['--worker'], {
      execArgv: childExecArgv(o.initialHeapMb),
      serialization: 'advanced',
      env: { ...process.env, ...o.env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let markReady: () => void = () => {};
    this.ready = new Promise<void>((r) => (markReady = r));
    this.child.on('message', (m: FromChild) => {
      if (m.type === 'ready') markReady();
      else if (m.type === 'fatal') this.fatal = m.error;
      else if (m.type === 'progress') o.onProgress?.(m.counters);
      else {
        const p = this.pending;
        this.pending = null;
        p?.resolve(m);
      }
    });
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      if (!this.closing) workersLost++;
      markReady();
      const p = this.pending;
      this.pending = null;
      p?.resolve({ type: 'failed', error: this.fatal ?? `worker process exited (${signal ?? `code ${code}`})` });
    });
    this.send({ type: 'init', init: o.init });
  }

  get alive(): boolean {
    return !this.exited;
  }

  private send(m: ToChild): void {
    if (!this.exited && this.child.connected) this.child.send(m);
  }

  async run(item: unknown): Promise<FromChild> {
    await this.ready;
    if (this.exited) return { type: 'failed', error: this.fatal ?? 'worker process exited' };
    return new Promise<FromChild>((resolve) => {
      this.pending = { resolve };
      this.send({ type: 'item', item });
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    this.closing = true;
    const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.send({ type: 'exit' });
    await gone;
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

const live = new Set<ChildWorker>();

/** Kills every child (SIGINT path). */
export function killWorkerProcesses(): void {
  for (const w of live) w.kill();
}

/** One pass over `items` with `processes` children; returns the items that failed. */
async function pass<Item, Result>(items: AsyncIterable<Item>, o: ProcessPoolOptions<Item, Result>): Promise<Item[]> {
  const queue: Item[] = [];
  let readerDone = false;
  let readerError: unknown = null;
  const wakeup = new Wakeup();
  const notify = (): void => wakeup.notify();
  // Like img2dataset's pool feeder, the reader runs ahead so workers never wait for the next item.
  const pump = (async () => {
    try {
      for await (const s of items) {
        queue.push(s);
        notify();
      }
    } catch (err) {
      readerError = err;
    } finally {
      readerDone = true;
      notify();
    }
  })();
  const take = async (): Promise<{ item: Item } | null> => {
    for (;;) {
      if (readerError) return null;
      if (queue.length > 0) return { item: queue.shift()! };
      if (readerDone) return null;
      await wakeup.wait();
    }
  };
  const failed: Item[] = [];
  const lane = async (): Promise<void> => {
    let worker: ChildWorker | null = null;
    try {
      for (;;) {
        const next = await take();
        if (!next) return;
        const item = next.item;
        if (!worker || !worker.alive) {
          if (worker) live.delete(worker);
          worker = new ChildWorker(o as ProcessPoolOptions<unknown, unknown>);
          live.add(worker);
        }
        const res = await worker.run(item);
        if (res.type === 'done') o.onItemDone?.(item, res.result as Result);
        else {
          const error = res.type === 'failed' ? res.error : 'unexpected worker answer';
          log.warn(`${o.noun} ${o.itemLabel(item)} failed with error ${error}`);
          o.onItemFailed?.(item, error);
          failed.push(item);
        }
      }
    } finally {
      if (worker) {
        await worker.close();
        live.delete(worker);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.processes) }, lane));
  await pump;
  if (readerError) throw readerError;
  return failed;
}

async function* fromArray<T>(items: T[]): AsyncGenerator<T> {
  yield* items;
}

/** Runs every item on the children, with o.maxRetry extra passes over the failed ones. */
export async function distributeToProcesses<Item, Result>(items: AsyncIterable<Item>, o: ProcessPoolOptions<Item, Result>): Promise<{ failed: Item[] }> {
  const lostBefore = workersLost;
  let failed = await pass(items, o);
  for (let attempt = 1; attempt <= o.maxRetry && failed.length > 0; attempt++) {
    log.info(`Retrying the ${failed.length} failed ${o.noun}s, try ${attempt}`);
    failed = await pass(fromArray(failed), o);
  }
  // Every child of this run has exited by now, so what the dead ones left can go.
  if (workersLost > lostBefore) await o.afterWorkersLost?.();
  if (failed.length > 0) {
    log.warn(`${failed.length} ${o.noun}s still failed after ${o.maxRetry} retries: rerun the same command to redo them`);
  }
  return { failed };
}

// ---------------------------------------------------------------------------------------------
// The child side.

export interface ChildHandler<Init, Item, Result> {
  /** Once, before any item (open pools, load models). */
  init(init: Init): Promise<void>;
  /** One item; `count(key, n)` adds to the progress sent to the parent. */
  run(item: Item, count: (key: string, n: number) => void): Promise<Result>;
  close(): Promise<void>;
}

/**
 * Ends this child at once: no exit handlers, no waiting for native threads to wind down. Its
 * unfinished files stay under temporary names, which the stage removes.
 */
function dieNow(): never {
  process.kill(process.pid, 'SIGKILL');
  // Unreachable; the signal is delivered synchronously to ourselves.
  process.exit(1);
}

export function runChildWorker<Init, Item, Result>(handler: ChildHandler<Init, Item, Result>): void {
  // The parent went away (killed, crashed): stop before writing anything more, so a rerun of the
  // same command never races with a leftover child committing the same item. Registered before
  // anything async so the event cannot be missed, and re-checked in case the channel was already
  // gone when this module finished loading.
  process.on('disconnect', dieNow);
  if (!process.connected) dieNow();
  const send = (m: FromChild): void => {
    if (process.connected) process.send?.(m);
  };
  let counters: Counters = {};
  let counted = false;
  const count = (key: string, n: number): void => {
    counters[key] = (counters[key] ?? 0) + n;
    counted = true;
  };
  const flush = (): void => {
    if (!counted) return;
    send({ type: 'progress', counters });
    counters = {};
    counted = false;
  };
  const timer = setInterval(flush, 250);
  let chain: Promise<void> = Promise.resolve();
  process.on('message', (m: ToChild) => {
    chain = chain.then(async () => {
      if (m.type === 'init') {
        try {
          await handler.init(m.init as Init);
        } catch (err) {
          send({ type: 'fatal', error: errorMessage(err) });
          process.exit(1);
        }
        send({ type: 'ready' });
      } else if (m.type === 'item') {
        try {
          const result = await handler.run(m.item as Item, count);
          flush();
          send({ type: 'done', result });
        } catch (err) {
          flush();
          send({ type: 'failed', error: errorMessage(err) });
        }
      } else if (m.type === 'exit') {
        clearInterval(timer);
        flush();
        await handler.close();
        process.off('disconnect', dieNow);
        process.disconnect?.();
        process.exit(0);
      }
    });
  });
}
