// --distributor bullmq for inference: one BullMQ job per output partition, on lib/distributor's
// coordinator and workers (the same machinery as download_images' shards). The coordinator lists
// the inputs and assigns elements to partitions exactly as the sequential run does (element i to
// partition i % N), so a job carries its partition's elements: a worker on any machine embeds that
// partition alone, with the same batches in the same order, and writes the same bytes. A worker
// builds the three files in a staging folder and renames them into place under the job's lock,
// metadata last, so a partition is finished exactly when its metadata file exists, as in a
// sequential run; finished partitions are never queued again.
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { commitFile } from '../../lib/atomic-file.ts';
import { coordinateBullmq } from '../../lib/distributor/bullmq-coordinator.ts';
import type { ItemHandler } from '../../lib/distributor/bullmq-worker.ts';
import { redactUrl } from '../../lib/distributor/redis.ts';
import { log } from '../../lib/log.ts';
import { npyRowCount, NpyWriter } from '../../lib/npy.ts';
import { loadModels, PartitionEmbedder, planPartitions, type ModelSettings, type Models, type PipelineOptions, type RunSummary } from './inference.ts';
import { elementsOf, openSource, partitionName, type InputFormat, type ParquetColumns, type Source, type SourceOptions } from './sources.ts';
import { isPartitionDone, partitionPaths, type PartitionPaths, type WriterOptions } from './writer.ts';

/** What a partition job carries: everything a worker needs besides --redis-url and --output-folder. */
export interface PartitionJob {
  partition: number;
  partitionCount: number;
  format: InputFormat;
  /** --input-dataset and further paths, as given (files mode lists the folder from them). */
  inputs: string[];
  /** This partition's elements (tars, sample keys or parquet files), in order. */
  elements: string[];
  /** The coordinator's working directory: relative input paths are read from there. */
  cwd: string;
  source: SourceOptions;
  parquetColumns: ParquetColumns;
  model: ModelSettings;
  batchSize: number;
  numPreproWorkers: number;
  enableMetadata: boolean;
}

/** Skip reasons a job hands back for the coordinator's log, at most this many per partition. */
const SKIPS_REPORTED = 20;

export interface PartitionResult {
  rows: number;
  skipped: number;
  /** The first skipped samples, `where: why`. */
  skippedSamples: string[];
}

export interface BullmqRun {
  source: Source;
  format: InputFormat;
  inputs: string[];
  sourceOptions: SourceOptions;
  parquetColumns: ParquetColumns;
  pipeline: PipelineOptions;
  model: ModelSettings;
  redisUrl: string;
  queueName: string;
  maxPartitionRetry: number;
}

/** The coordinator: queues the unfinished partitions, follows them, sums up as the sequential run. */
export async function runInferenceBullmq(r: BullmqRun): Promise<RunSummary & { failed: string[] }> {
  const started = Date.now();
  const o = r.pipeline;
  const outputFolder = resolve(o.outputFolder);
  const summary: RunSummary = { partitionsDone: 0, partitionsSkipped: 0, samples: 0, skipped: 0, seconds: 0 };
  const { todo, finished, progress } = planPartitions(r.source, o);
  summary.partitionsSkipped = finished;
  const name = (p: number): string => partitionName(p, o.partitionCount);
  let failed: number[] = [];
  try {
    if (todo.length > 0) {
      await mkdir(outputFolder, { recursive: true });
      async function* items(): AsyncGenerator<number> {
        yield* todo;
      }
      const model = { ...r.model, clipModel: resolve(r.model.clipModel) };
      const res = await coordinateBullmq<number, PartitionResult>(items(), {
        redisUrl: r.redisUrl,
        queueName: r.queueName,
        outputFolder,
        markerFolder: outputFolder,
        noun: 'partition',
        itemId: (p) => `partition-${name(p)}`,
        itemName: name,
        payload: (p): PartitionJob => ({
          partition: p,
          partitionCount: o.partitionCount,
          format: r.format,
          inputs: r.inputs,
          elements: elementsOf(r.source, p, o.partitionCount),
          cwd: process.cwd(),
          source: r.sourceOptions,
          parquetColumns: r.parquetColumns,
          model,
          batchSize: o.batchSize,
          numPreproWorkers: o.numPreproWorkers,
          enableMetadata: o.enableMetadata,
        }),
        attempts: 1 + Math.max(0, r.maxPartitionRetry),
        workerCommand: `npx tsx embeddings-indices-hosting/run.ts inference --worker --redis-url ${redactUrl(r.redisUrl)} --queue-name ${r.queueName} --output-folder ${outputFolder}`,
        onProgress: (d) => {
          if (d.ok) progress.item(true, d.ok);
          if (d.failed) progress.item(false, d.failed);
        },
        resultCounters: (res) => ({ ok: res.rows, failed: res.skipped }),
        onItemDone: (p, res) => {
          summary.partitionsDone++;
          summary.samples += res.rows;
          summary.skipped += res.skipped;
          for (const s of res.skippedSamples) log.warn(`skipped ${s}`);
          if (res.skipped > res.skippedSamples.length) log.warn(`partition ${name(p)}: ${res.skipped - res.skippedSamples.length} more skipped samples (named in its worker's log)`);
          log.info(`partition ${name(p)}: ${res.rows} samples written`);
        },
      });
      failed = res.failed;
    }
  } finally {
    progress.stop();
  }
  summary.seconds = (Date.now() - started) / 1000;
  return { ...summary, failed: failed.map(name) };
}

/** The three files of a partition in `paths`, metadata last (the partition's completion mark). */
function partitionFiles(paths: PartitionPaths, o: WriterOptions): string[] {
  const files: string[] = [];
  if (o.enableImage) files.push(paths.image);
  if (o.enableText) files.push(paths.text);
  files.push(paths.metadata);
  return files;
}

const writerOptions = (job: PartitionJob): WriterOptions => ({ enableImage: job.model.enableImage, enableText: job.model.enableText, enableMetadata: job.enableMetadata });

/** What a worker may set for itself instead of taking the coordinator's value. */
export interface WorkerOverrides {
  clipModel: string | null;
  device: ModelSettings['device'] | null;
  intraOpThreads: number | null;
  numPreproWorkers: number | null;
}

/** Partitions as lib/distributor's worker items. Models and file listings are kept for the next job. */
export function partitionHandler(overrides: WorkerOverrides): ItemHandler<PartitionJob, PartitionResult> {
  const models = new Map<string, Promise<Models>>();
  const listings = new Map<string, Promise<Source>>();
  const modelsFor = (m: ModelSettings): Promise<Models> => {
    const settings: ModelSettings = {
      ...m,
      clipModel: overrides.clipModel ?? m.clipModel,
      device: overrides.device ?? m.device,
      intraOpThreads: overrides.intraOpThreads ?? m.intraOpThreads,
    };
    const key = JSON.stringify(settings);
    let p = models.get(key);
    if (!p) {
      p = loadModels(settings);
      p.catch(() => models.delete(key));
      models.set(key, p);
    }
    return p;
  };
  const sourceFor = (job: PartitionJob): Promise<Source> => {
    const options: SourceOptions = { ...job.source, readRoot: job.cwd };
    // Tars and parquet files are read by path: opening only this partition's is cheap. The files
    // layout is keyed by names listed from the whole folder, so that listing is kept.
    if (job.format !== 'files') return openSource(job.format, job.elements, options, job.parquetColumns);
    const key = JSON.stringify([job.inputs, options]);
    let p = listings.get(key);
    if (!p) {
      p = openSource(job.format, job.inputs, options, job.parquetColumns);
      p.catch(() => listings.delete(key));
      listings.set(key, p);
    }
    return p;
  };
  return {
    noun: 'partition',
    async committed(job, outputFolder, name) {
      const o = writerOptions(job);
      const paths = partitionPaths(outputFolder, name);
      if (!isPartitionDone(paths, o)) return null;
      const npy = o.enableImage ? paths.image : paths.text;
      return { rows: await npyRowCount(npy), skipped: 0, skippedSamples: [] };
    },
    describe: (job) => `${job.elements.length} ${job.format === 'files' ? 'samples' : `${job.format} files`}`,
    async process(a) {
      const job = a.payload;
      const counters = { ok: 0, failed: 0 };
      a.counters = counters;
      const result: PartitionResult = { rows: 0, skipped: 0, skippedSamples: [] };
      const source = await sourceFor(job);
      const embedder = new PartitionEmbedder(await modelsFor(job.model), {
        ...writerOptions(job),
        batchSize: job.batchSize,
        numPreproWorkers: overrides.numPreproWorkers ?? job.numPreproWorkers,
      });
      result.rows = await embedder.run(source, job.elements, partitionPaths(a.staging, a.name), (path, cols) => NpyWriter.create(path, 'float16', cols), join(a.staging, '.duckdb-tmp'), {
        embedded: (n) => {
          counters.ok += n;
        },
        skipped: (s) => {
          counters.failed++;
          result.skipped++;
          if (result.skippedSamples.length < SKIPS_REPORTED) result.skippedSamples.push(`${s.where}: ${s.skipped}`);
          log.warn(`skipped ${s.where}: ${s.skipped}`);
        },
      });
      return result;
    },
    async commit(a) {
      const o = writerOptions(a.payload);
      const staged = partitionFiles(partitionPaths(a.staging, a.name), o);
      const final = partitionFiles(partitionPaths(a.outputFolder, a.name), o);
      for (const [i, f] of final.entries()) {
        await mkdir(dirname(f), { recursive: true });
        await commitFile(staged[i]!, f);
      }
    },
    doneLine: (name, r, alreadyDone) => `partition ${name}: ${r.rows} samples written${r.skipped ? `, ${r.skipped} skipped` : ''}${alreadyDone ? ' (already committed by another attempt)' : ''}`,
    async close() {
      models.clear();
      listings.clear();
    },
  };
}
