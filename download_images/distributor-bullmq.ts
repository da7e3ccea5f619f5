// --distributor bullmq for download_images: one job per shard on lib/distributor's BullMQ
// coordinator; `download_images/worker.ts` processes them on any number of machines that see the
// same output folder. The coordinator cuts the inputs into shard files under `<out>/_tmp` (the
// run marker goes there too, so it leaves with _tmp), queues them, and reports through the same
// callbacks as the multiprocessing distributor so run.ts prints the same lines and summary.
//
// Retries: a job gets 1 + --max-shard-retry attempts (the multiprocessing distributor's extra
// passes); a worker killed mid-shard is not an attempt (see lib/distributor/bullmq-coordinator.ts).
import { join, relative } from 'node:path';
import { coordinateBullmq } from '../lib/distributor/bullmq-coordinator.ts';
import { redactUrl } from '../lib/distributor/redis.ts';
import { log } from '../lib/log.ts';
import type { DistributeOptions, DistributeResult } from './distributor.ts';
import type { DownloadConfig } from './options.ts';
import { shardName, type InputShard } from './reader.ts';
import type { ShardStatsJson } from './stats.ts';

export { cancelQueuedJobs as cancelQueuedShards } from '../lib/distributor/bullmq-coordinator.ts';

/** What a shard job carries: everything a worker needs besides --redis-url and --output-folder. */
export interface ShardJob {
  shardId: number;
  /** The shard's input folder relative to the output folder (`_tmp/<id>`). */
  shardPath: string;
  rows: number;
  config: DownloadConfig;
}

export async function distributeBullmq(shards: AsyncIterable<InputShard>, o: DistributeOptions): Promise<DistributeResult> {
  const { config, outputFolder } = o;
  const url = config.redisUrl;
  if (!url) throw new Error('--distributor bullmq needs --redis-url');
  if (config.processesCount > 1) log.info('--processes-count is not used with --distributor bullmq: each worker sets its own --concurrency');
  const { failed } = await coordinateBullmq<InputShard, ShardStatsJson>(shards, {
    redisUrl: url,
    queueName: config.queueName,
    outputFolder,
    markerFolder: join(outputFolder, '_tmp'),
    noun: 'shard',
    itemId: (s) => String(s.shardId),
    itemName: (s) => shardName(s.shardId, config.oomShardCount),
    payload: (s): ShardJob => ({ shardId: s.shardId, shardPath: relative(outputFolder, s.path), rows: s.rows, config }),
    attempts: 1 + Math.max(0, config.maxShardRetry),
    workerCommand: `npx tsx download_images/worker.ts --redis-url ${redactUrl(url)} --queue-name ${config.queueName} --output-folder ${outputFolder}`,
    onProgress: (d) => o.onProgress?.(d.ok ?? 0, d.failed ?? 0, d.bytes ?? 0),
    // bytes: only what the progress reports carried (the stats hold no byte count).
    resultCounters: (s) => ({ ok: s.successes, failed: s.count - s.successes }),
    onItemDone: (shard, stats) => o.onShardDone?.(shard, stats),
    onItemFailed: (shard, error) => o.onShardFailed?.(shard, error),
  });
  if (failed.length > 0) log.warn(`${failed.length} shards still failed after ${config.maxShardRetry} retries: rerun the same command to redo them`);
  return { failed };
}
