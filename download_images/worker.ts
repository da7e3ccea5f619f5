// A BullMQ worker for `download_images/run.ts --distributor bullmq`: takes shard jobs from the
// queue (lib/distributor/bullmq-worker.ts does the queue, staging, locking and signals) and runs
// each through the same processShard as the multiprocessing workers. Start one (or more) per
// machine; all must see the coordinator's output folder (a shared filesystem).
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defineCli, exitOnCliError, isMainModule } from '../lib/cli.ts';
import { queueWorkerFlags, runQueueWorker, toQueueWorkerSettings, type ItemHandler } from '../lib/distributor/bullmq-worker.ts';
import { log } from '../lib/log.ts';
import type { ShardJob } from './distributor-bullmq.ts';
import { createSampleDeps } from './distributor.ts';
import type { DownloadConfig } from './options.ts';
import { resolveEngine } from './resizer.ts';
import { processShard, removeShardInput, type SampleDeps } from './sample-pipeline.ts';
import { commitShard, statsPath } from './shard-state.ts';
import { loggerLine, type ShardStatsJson } from './stats.ts';
import type { PendingFile } from './writers.ts';

export const workerCli = defineCli({
  command: 'npx tsx download_images/worker.ts',
  summary: 'Process download_images shards from a BullMQ queue (the workers of --distributor bullmq).',
  flags: queueWorkerFlags('download_images', "Shards processed at once by this process (each with the run's --thread-count downloads)"),
  epilog: `
Start the coordinator on one machine, then any number of workers wherever the output folder is shared:
  npx tsx download_images/run.ts --url_list in.parquet --input_format parquet --output_folder /shared/out \\
    --distributor bullmq --redis-url redis://10.0.0.1:6379
  npx tsx download_images/worker.ts --redis-url redis://10.0.0.1:6379 --output-folder /shared/out
SIGTERM or Ctrl-C finishes the shards in progress and exits; a second one puts them back on the queue at once.`,
});

async function readStats(path: string): Promise<ShardStatsJson | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as ShardStatsJson;
  } catch {
    return null;
  }
}

/** Shards as lib/distributor's worker items: built by processShard in staging, committed by commitShard. */
export function shardHandler(): ItemHandler<ShardJob, ShardStatsJson> {
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
  const input = (job: ShardJob, outputFolder: string): { shardId: number; path: string } => ({ shardId: job.shardId, path: join(outputFolder, job.shardPath) });
  return {
    noun: 'shard',
    committed: (_job, outputFolder, name) => readStats(statsPath(outputFolder, name)),
    describe: (job) => `${job.rows} rows`,
    async process(a) {
      const counters = { ok: 0, failed: 0, bytes: 0 };
      a.counters = counters;
      return processShard(input(a.payload, a.outputFolder), {
        config: a.payload.config,
        deps: await depsFor(a.payload.config),
        outputFolder: a.staging,
        onSample: (ok, bytes) => {
          if (ok) counters.ok++;
          else counters.failed++;
          counters.bytes += bytes;
        },
      });
    },
    async commit(a, stats) {
      const files: PendingFile[] = [];
      for (const e of await readdir(a.staging, { withFileTypes: true })) {
        if (e.name === `${a.name}_stats.json`) continue;
        files.push({ temp: join(a.staging, e.name), final: join(a.outputFolder, e.name), isDir: e.isDirectory() });
      }
      await commitShard(a.outputFolder, a.name, files, stats);
    },
    afterCommit: (job, outputFolder) => removeShardInput(input(job, outputFolder)),
    doneLine: (name, st, alreadyDone) => `${loggerLine('worker', st, st.duration)} (shard ${name}${alreadyDone ? ', already committed by another attempt' : ''})`,
    async close() {
      for (const d of depsBySetting.values()) await (await d.catch(() => null))?.close?.();
    },
  };
}

async function main(): Promise<void> {
  const { flags } = workerCli.run();
  const settings = exitOnCliError(() => toQueueWorkerSettings(flags));
  // The coordinator's --resize-engine fast or exact falls back to sharp on a machine without the addon.
  const engine = resolveEngine('fast');
  if (engine.note) log.warn(engine.note);
  process.exit(await runQueueWorker(settings, shardHandler()));
}

if (isMainModule(import.meta.url)) await main();
