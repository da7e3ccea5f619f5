// --distributor multiprocessing: --processes-count child processes, each owning whole shards
// (reference 6), on lib/distributor/processes.ts. Child processes because each then has its own
// libuv thread pool (sharp's resizes and DNS lookups run there), its own DuckDB and HTTP pools, and
// a crash or out-of-memory kill loses one shard, which is retried: like img2dataset's pool, shards
// that failed are retried --max-shard-retry more times at the end.
//
// The same file is the child's entry point (`distributor.ts --worker`).
import { fileURLToPath } from 'node:url';
import { isMainModule } from '../lib/cli.ts';
import { distributeToProcesses, killWorkerProcesses, runChildWorker, type ChildHandler } from '../lib/distributor/processes.ts';
import { startHeapTrimmer } from '../lib/image-ops/index.ts';
import { createImageHttpClient, ImageDownloader } from './downloader.ts';
import { extractExif } from './exif.ts';
import type { DownloadConfig } from './options.ts';
import type { InputShard } from './reader.ts';
import { createResizer } from './resizer.ts';
import { processShard, removeShardInput, type SampleDeps } from './sample-pipeline.ts';
import { removeTempLeftovers } from './shard-state.ts';
import type { ShardStatsJson } from './stats.ts';

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

// V8 starts the old generation's limit at a few MB, and a worker's old generation keeps growing
// (the shard's metadata rows live until its parquet is written), so it ran a full GC every ~30
// images (211 per 6,000). Starting at 128 MB: 8 full GCs, 11% less CPU per image, same peak RSS.
const WORKER_INITIAL_HEAP_MB = 128;

/** Kills every worker (SIGINT path). */
export function killWorkers(): void {
  killWorkerProcesses();
}

export async function distribute(shards: AsyncIterable<InputShard>, o: DistributeOptions): Promise<DistributeResult> {
  return distributeToProcesses<InputShard, ShardStatsJson>(shards, {
    workerModule: fileURLToPath(import.meta.url),
    init: { config: o.config, outputFolder: o.outputFolder } satisfies ShardWorkerInit,
    processes: o.config.processesCount,
    maxRetry: o.config.maxShardRetry,
    noun: 'shard',
    itemLabel: (s) => String(s.shardId),
    // Enough libuv threads for concurrent resizes and DNS lookups.
    // MALLOC_ARENA_MAX: glibc gives each decoding thread its own heap arena, and libvips' buffers
    // fragment them, so RSS creeps up over a long run (sharp's documentation advises this).
    env: {
      UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '8',
      MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
    },
    initialHeapMb: WORKER_INITIAL_HEAP_MB,
    onProgress: (d) => o.onProgress?.(d.ok ?? 0, d.failed ?? 0, d.bytes ?? 0),
    onItemDone: (shard, stats) => o.onShardDone?.(shard, stats),
    onItemFailed: (shard, error) => o.onShardFailed?.(shard, error),
    // The temporary files of the workers that died.
    afterWorkersLost: async () => {
      await removeTempLeftovers(o.outputFolder);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// The child side.

interface ShardWorkerInit {
  config: DownloadConfig;
  outputFolder: string;
}

function shardChildHandler(): ChildHandler<ShardWorkerInit, InputShard, ShardStatsJson> {
  let init: ShardWorkerInit | null = null;
  let deps: SampleDeps | null = null;
  return {
    async init(i) {
      init = i;
      deps = await createSampleDeps(i.config);
    },
    async run(shard, count) {
      const stats = await processShard(shard, {
        config: init!.config,
        deps: deps!,
        outputFolder: init!.outputFolder,
        onSample: (success, n) => {
          count(success ? 'ok' : 'failed', 1);
          count('bytes', n);
        },
      });
      await removeShardInput(shard);
      return stats;
    },
    async close() {
      await deps?.close?.();
    },
  };
}

if (isMainModule(import.meta.url) && process.argv[2] === '--worker') {
  runChildWorker(shardChildHandler());
}
