// --distributor multiprocessing: --processes-count child processes, each owning whole shards
// (reference 6). Child processes rather than worker threads because each child then has its own
// libuv thread pool (sharp's resizes and DNS lookups run there; worker threads would all share the
// parent's 4 threads), its own DuckDB and HTTP pools, and a crash or out-of-memory kill takes down
// one worker and its current shard, which is retried, not the run. Like img2dataset's pool, shards
// that failed are retried --max-shard-retry more times at the end.
//
// The same file is the child's entry point (`distributor.ts --worker`).
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isMainModule } from '../lib/cli.ts';
import { startHeapTrimmer } from '../lib/image-ops/index.ts';
import { errorMessage, log } from '../lib/log.ts';
import { Wakeup } from '../lib/wakeup.ts';
import { createImageHttpClient, ImageDownloader } from './downloader.ts';
import { extractExif } from './exif.ts';
import type { DownloadConfig } from './options.ts';
import type { InputShard } from './reader.ts';
import { createResizer } from './resizer.ts';
import { processShard, removeShardInput, type SampleDeps } from './sample-pipeline.ts';
import { removeTempLeftovers } from './shard-state.ts';
import type { ShardStatsJson } from './stats.ts';

type ToWorker = { type: 'init'; config: DownloadConfig; outputFolder: string } | { type: 'shard'; shard: InputShard } | { type: 'exit' };
type FromWorker =
  | { type: 'ready' }
  | { type: 'fatal'; error: string }
  | { type: 'progress'; ok: number; failed: number; bytes: number }
  | { type: 'done'; shardId: number; stats: ShardStatsJson }
  | { type: 'failed'; shardId: number; error: string };

export interface DistributeOptions {
  config: DownloadConfig;
  /** Absolute output folder. */
  outputFolder: string;
  onProgress?: (ok: number, failed: number, bytes: number) => void;
  onShardDone?: (shard: InputShard, stats: ShardStatsJson) => void;
  onShardFailed?: (shard: InputShard, error: string) => void;
}

export interface DistributeResult {
  /** Shards still failed after every retry pass. */
  failed: InputShard[];
}

/** The real per-sample steps for one worker process: one HTTP pool for all its shards. */
export async function createSampleDeps(config: DownloadConfig): Promise<SampleDeps> {
  const client = createImageHttpClient({
    allowPrivateAddresses: config.allowPrivateAddresses,
    perHostConnections: config.perHostConnections,
    userAgentToken: config.userAgentToken,
  });
  const downloader = new ImageDownloader(client, {
    timeoutMs: config.timeoutMs,
    retries: config.retries,
    maxImageBytes: config.maxImageBytes,
    userAgentToken: config.userAgentToken,
    disallowedHeaderDirectives: config.disallowedHeaderDirectives,
  });
  const resize = createResizer({
    imageSize: config.imageSize,
    resizeMode: config.resizeMode,
    resizeOnlyIfBigger: config.resizeOnlyIfBigger,
    upscaleInterpolation: config.upscaleInterpolation,
    downscaleInterpolation: config.downscaleInterpolation,
    encodeQuality: config.encodeQuality,
    encodeFormat: config.encodeFormat,
    skipReencode: config.skipReencode,
    disableAllReencoding: config.disableAllReencoding,
    minImageSize: config.minImageSize,
    maxImageArea: config.maxImageArea,
    maxAspectRatio: config.maxAspectRatio,
    maxImagePixels: config.maxImagePixels,
    engine: config.resizeEngine,
  });
  // Freed decode buffers would otherwise stay in RSS: see lib/image-ops trimHeap.
  const stopTrimmer = startHeapTrimmer();
  return {
    download: (url) => downloader.download(url),
    resize,
    exif: extractExif,
    close: () => {
      stopTrimmer();
      return client.close();
    },
  };
}

const WORKER_INITIAL_HEAP_MB = 128;

/** Node flags that make a child run TypeScript the way this process does, and its heap start size. */
function childExecArgv(): string[] {
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
  // V8 starts the old generation's limit at a few MB, and a worker's old generation keeps growing
  // (the shard's metadata rows live until its parquet is written), so it ran a full GC every ~30
  // images (211 per 6,000). Starting at 128 MB: 8 full GCs, 11% less CPU per image, same peak RSS.
  const own = argv.find((a) => a.startsWith('--initial-heap-size'));
  keep.push(own ?? `--initial-heap-size=${WORKER_INITIAL_HEAP_MB}`);
  return keep;
}

class Worker {
  private child: ChildProcess;
  private pending: { resolve: (m: FromWorker) => void } | null = null;
  private exited = false;
  private closing = false;
  private fatal: string | null = null;
  private readonly ready: Promise<void>;

  constructor(private readonly o: DistributeOptions) {
    this.child = fork(fileURLToPath(import.meta.url), ['--worker'], {
      execArgv: childExecArgv(),
      serialization: 'advanced',
      // Enough libuv threads for concurrent resizes and DNS lookups.
      // MALLOC_ARENA_MAX: glibc gives each decoding thread its own heap arena, and libvips' buffers
      // fragment them, so RSS creeps up over a long run (sharp's documentation advises this).
      env: {
        ...process.env,
        UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '8',
        MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let markReady: () => void = () => {};
    this.ready = new Promise<void>((r) => (markReady = r));
    this.child.on('message', (m: FromWorker) => {
      if (m.type === 'ready') markReady();
      else if (m.type === 'fatal') this.fatal = m.error;
      else if (m.type === 'progress') this.o.onProgress?.(m.ok, m.failed, m.bytes);
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
      p?.resolve({ type: 'failed', shardId: -1, error: this.fatal ?? `worker process exited (${signal ?? `code ${code}`})` });
    });
    this.send({ type: 'init', config: o.config, outputFolder: o.outputFolder });
  }

  get alive(): boolean {
    return !this.exited;
  }

  private send(m: ToWorker): void {
    if (!this.exited && this.child.connected) this.child.send(m);
  }

  async run(shard: InputShard): Promise<FromWorker> {
    await this.ready;
    if (this.exited) return { type: 'failed', shardId: shard.shardId, error: this.fatal ?? 'worker process exited' };
    return new Promise<FromWorker>((resolve) => {
      this.pending = { resolve };
      this.send({ type: 'shard', shard });
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

const live = new Set<Worker>();
/** Workers that died without being asked to (crash, OOM kill): their shard files are left behind. */
let workersLost = 0;

/** Kills every worker (SIGINT path). */
export function killWorkers(): void {
  for (const w of live) w.kill();
}

/** Runs one pass over `shards` with `processesCount` workers; returns the shards that failed. */
async function pass(shards: AsyncIterable<InputShard>, o: DistributeOptions): Promise<InputShard[]> {
  const queue: InputShard[] = [];
  let readerDone = false;
  let readerError: unknown = null;
  const wakeup = new Wakeup();
  const notify = (): void => wakeup.notify();
  // Like img2dataset's pool feeder, the reader runs ahead so workers never wait for sharding.
  const pump = (async () => {
    try {
      for await (const s of shards) {
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
  const take = async (): Promise<InputShard | null> => {
    for (;;) {
      if (readerError) return null;
      const s = queue.shift();
      if (s) return s;
      if (readerDone) return null;
      await wakeup.wait();
    }
  };
  const failed: InputShard[] = [];
  const lane = async (): Promise<void> => {
    let worker: Worker | null = null;
    try {
      for (;;) {
        const shard = await take();
        if (!shard) return;
        if (!worker || !worker.alive) {
          if (worker) live.delete(worker);
          worker = new Worker(o);
          live.add(worker);
        }
        const res = await worker.run(shard);
        if (res.type === 'done') o.onShardDone?.(shard, res.stats);
        else {
          const error = res.type === 'failed' ? res.error : 'unexpected worker answer';
          log.warn(`shard ${shard.shardId} failed with error ${error}`);
          o.onShardFailed?.(shard, error);
          failed.push(shard);
        }
      }
    } finally {
      if (worker) {
        await worker.close();
        live.delete(worker);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.config.processesCount) }, lane));
  await pump;
  if (readerError) throw readerError;
  return failed;
}

async function* fromArray<T>(items: T[]): AsyncGenerator<T> {
  yield* items;
}

export async function distribute(shards: AsyncIterable<InputShard>, o: DistributeOptions): Promise<DistributeResult> {
  const lostBefore = workersLost;
  let failed = await pass(shards, o);
  for (let attempt = 1; attempt <= o.config.maxShardRetry && failed.length > 0; attempt++) {
    log.info(`Retrying the ${failed.length} failed shards, try ${attempt}`);
    failed = await pass(fromArray(failed), o);
  }
  // Every worker of this run has exited by now, so the temporary files of the dead ones can go.
  if (workersLost > lostBefore) await removeTempLeftovers(o.outputFolder);
  if (failed.length > 0) {
    log.warn(`${failed.length} shards still failed after ${o.config.maxShardRetry} retries: rerun the same command to redo them`);
  }
  return { failed };
}

// ---------------------------------------------------------------------------------------------
// The child side.

/**
 * Ends this worker at once: no exit handlers, no waiting for DuckDB or libvips threads to wind down.
 * Unfinished shard files stay under `.tmp-*` names, which the next run removes.
 */
function dieNow(): never {
  process.kill(process.pid, 'SIGKILL');
  // Unreachable; the signal is delivered synchronously to ourselves.
  process.exit(1);
}

function runWorker(): void {
  // The coordinator went away (killed, crashed): stop before writing anything more, so a rerun of
  // the same command never races with a leftover worker committing the same shard. Registered
  // before anything async so the event cannot be missed, and re-checked in case the channel was
  // already gone when this module finished loading.
  process.on('disconnect', dieNow);
  if (!process.connected) dieNow();
  const send = (m: FromWorker): void => {
    if (process.connected) process.send?.(m);
  };
  let config: DownloadConfig | null = null;
  let outputFolder = '';
  let deps: SampleDeps | null = null;
  let ok = 0;
  let failedCount = 0;
  let bytes = 0;
  const flush = (): void => {
    if (ok + failedCount === 0) return;
    send({ type: 'progress', ok, failed: failedCount, bytes });
    ok = failedCount = bytes = 0;
  };
  const timer = setInterval(flush, 250);
  let chain: Promise<void> = Promise.resolve();
  process.on('message', (m: ToWorker) => {
    chain = chain.then(async () => {
      if (m.type === 'init') {
        config = m.config;
        outputFolder = m.outputFolder;
        try {
          deps = await createSampleDeps(config);
        } catch (err) {
          send({ type: 'fatal', error: errorMessage(err) });
          process.exit(1);
        }
        send({ type: 'ready' });
      } else if (m.type === 'shard') {
        try {
          const stats = await processShard(m.shard, {
            config: config!,
            deps: deps!,
            outputFolder,
            onSample: (success, n) => {
              if (success) ok++;
              else failedCount++;
              bytes += n;
            },
          });
          await removeShardInput(m.shard);
          flush();
          send({ type: 'done', shardId: m.shard.shardId, stats });
        } catch (err) {
          flush();
          send({ type: 'failed', shardId: m.shard.shardId, error: errorMessage(err) });
        }
      } else if (m.type === 'exit') {
        clearInterval(timer);
        flush();
        await deps?.close?.();
        process.off('disconnect', dieNow);
        process.disconnect?.();
        process.exit(0);
      }
    });
  });
}

if (isMainModule(import.meta.url) && process.argv[2] === '--worker') {
  runWorker();
}
