// The pipeline: for each unfinished partition, samples are read and preprocessed into the next
// batch while the model embeds the current one (two pixel buffers alternate), then the normalised
// embeddings and the metadata rows go to the partition writer. Memory is bounded by two batches:
// 2 x batch_size x 3 x S x S float32 pixels, their encoded images, and 2 x batch_size x 77 ids.
import { join } from 'node:path';
import { log } from '../../lib/log.ts';
import { Progress } from '../../lib/progress.ts';
import { defaultRowsPerRun, locateModelFiles, normalizeRows, openImageTower, openTextTower, type Device, type ImageTower, type ModelDtype, type TextTower } from './clip-model.ts';
import { ImagePreprocessor, readPreprocessorConfig } from './preprocess.ts';
import { elementsOf, partitionName, type Sample, type Skipped, type Source } from './sources.ts';
import { ClipTokenizer } from './tokenizer.ts';
import { isPartitionDone, PartitionWriter, partitionPaths, type OpenRowFile, type PartitionPaths, type WriterOptions } from './writer.ts';

export interface EmbedOptions extends WriterOptions {
  batchSize: number;
  /** Images being decoded and preprocessed at once (native work on libuv's thread pool). */
  numPreproWorkers: number;
}

export interface PipelineOptions extends EmbedOptions {
  outputFolder: string;
  partitionCount: number;
  /** Only these partitions (all when null). */
  partitions: readonly number[] | null;
}

export interface Models {
  image: ImageTower | null;
  text: TextTower | null;
  preprocessor: ImagePreprocessor | null;
  tokenizer: ClipTokenizer | null;
}

export interface ModelSettings {
  /** The model folder (see locateModelFiles). */
  clipModel: string;
  /** Which variant of the towers (clip-model.ts MODEL_DTYPES); absent: fp32. */
  dtype?: ModelDtype;
  device: Device;
  intraOpThreads: number;
  /** Rows per onnxruntime run (0 = whole batch); null: the device's default (defaultRowsPerRun). */
  rowsPerRun?: number | null;
  enableImage: boolean;
  enableText: boolean;
}

/** Opens the towers, tokenizer and preprocessing the settings ask for, and says which in the log. */
export async function loadModels(m: ModelSettings): Promise<Models> {
  const files = locateModelFiles(m.clipModel, { image: m.enableImage, text: m.enableText }, m.dtype);
  const rowsPerRun = m.rowsPerRun ?? defaultRowsPerRun(m.device);
  const session = { device: m.device, intraOpThreads: m.intraOpThreads, rowsPerRun };
  const preprocessing = m.enableImage ? readPreprocessorConfig(files.preprocessorConfig) : null;
  const image = preprocessing ? await openImageTower(files.vision, preprocessing.size, session) : null;
  const text = m.enableText ? await openTextTower(files.text, session) : null;
  const tokenizer = m.enableText ? ClipTokenizer.fromModelFiles(files) : null;
  const preprocessor = preprocessing ? new ImagePreprocessor(preprocessing) : null;
  log.info(`execution provider: ${m.device} (onnxruntime-node; model variant ${files.dtype}; intra-op threads ${m.intraOpThreads || 'default'}; ${rowsPerRun > 0 ? `runs of at most ${rowsPerRun} rows` : 'one run per batch'})`);
  if (preprocessing) log.info(`image tower ${files.vision}: ${preprocessing.size}x${preprocessing.size} -> ${image!.dim}; ${preprocessing.describe()}`);
  if (text) log.info(`text tower ${files.text}: 77 ids${text.takesAttentionMask ? ' + attention_mask' : ''} -> ${text.dim}; tokenizer ${files.tokenizerJson ?? `${files.vocabJson} + ${files.mergesTxt}`}`);
  return { image, text, preprocessor, tokenizer };
}

export interface RunSummary {
  partitionsDone: number;
  partitionsSkipped: number;
  samples: number;
  skipped: number;
  seconds: number;
}

interface Batch {
  samples: Sample[];
  pixels: Float32Array | null;
}

/** Runs async work with at most `limit` in flight. */
class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    while (this.active >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/** What happens to samples while a partition is embedded. */
export interface PartitionEvents {
  embedded(n: number): void;
  skipped(s: Skipped): void;
}

/**
 * Embeds the samples of some source elements and writes them as one partition. The sequential run
 * uses one for every partition; a BullMQ worker one per job. Holds the two pixel buffers, so one
 * partition at a time per embedder.
 */
export class PartitionEmbedder {
  private readonly imageFloats: number;
  private readonly buffers: Float32Array[];
  private bufferIndex = 0;
  private readonly limiter: Limiter;

  constructor(
    private readonly models: Models,
    private readonly o: EmbedOptions,
  ) {
    const side = models.image?.size ?? 0;
    this.imageFloats = 3 * side * side;
    // Two pixel buffers: one being filled while the model reads the other.
    this.buffers = o.enableImage ? [new Float32Array(o.batchSize * this.imageFloats), new Float32Array(o.batchSize * this.imageFloats)] : [];
    this.limiter = new Limiter(Math.max(1, o.numPreproWorkers));
  }

  /** Writes the partition at `paths` (temporary names, metadata renamed last); returns its row count. */
  async run(source: Source, elements: readonly string[], paths: PartitionPaths, openRowFile: OpenRowFile, tempDirectory: string, events: PartitionEvents): Promise<number> {
    const { models, o, imageFloats, limiter } = this;
    const writer = await PartitionWriter.open(paths, o, { image: models.image?.dim ?? 0, text: models.text?.dim ?? 0 }, openRowFile, tempDirectory);
    try {
      const samples = source.read(elements);

      // Reads up to batchSize usable samples and preprocesses their images into the next buffer.
      const assemble = async (): Promise<Batch | null> => {
        const pixels = o.enableImage ? this.buffers[this.bufferIndex++ % 2]! : null;
        const batch: Sample[] = [];
        const ok: boolean[] = [];
        const work: Promise<void>[] = [];
        while (batch.length < o.batchSize) {
          const next = await samples.next();
          if (next.done) break;
          const s = next.value;
          if ('skipped' in s) {
            events.skipped(s);
            continue;
          }
          const slot = batch.length;
          batch.push(s);
          ok.push(true);
          if (pixels && models.preprocessor) {
            const out = pixels.subarray(slot * imageFloats, (slot + 1) * imageFloats);
            work.push(
              limiter.run(() => models.preprocessor!.run(s.image!, out)).catch((err: unknown) => {
                ok[slot] = false;
                events.skipped({ skipped: `image does not decode (${(err as Error).message})`, where: s.where });
              }),
            );
          }
        }
        await Promise.all(work);
        if (batch.length === 0) return null;
        // Drop the images that failed, keeping order: row k stays sample k in all three files.
        const kept: Sample[] = [];
        for (let i = 0; i < batch.length; i++) {
          if (!ok[i]) continue;
          if (pixels && kept.length !== i) pixels.copyWithin(kept.length * imageFloats, i * imageFloats, (i + 1) * imageFloats);
          kept.push(batch[i]!);
        }
        return { samples: kept, pixels };
      };

      // A rejection of the batch being prepared is handled where it is awaited; the no-op catch
      // keeps Node from treating it as unhandled while the model is still busy with this batch.
      const prepare = (): Promise<Batch | null> => {
        const p = assemble();
        p.catch(() => undefined);
        return p;
      };
      let pending = prepare();
      for (;;) {
        const batch = await pending;
        if (!batch) break;
        pending = prepare(); // the next batch is read and preprocessed while this one runs
        const n = batch.samples.length;
        if (n === 0) continue;
        let imageEmb: Float32Array | null = null;
        let textEmb: Float32Array | null = null;
        if (models.image && batch.pixels) {
          imageEmb = normalizeRows(new Float32Array(await models.image.run(batch.pixels, n)), n, models.image.dim);
        }
        if (models.text && models.tokenizer) {
          const tokens = models.tokenizer.encodeBatch(batch.samples.map((s) => s.caption ?? ''));
          textEmb = normalizeRows(new Float32Array(await models.text.run(tokens.ids, tokens.mask, n)), n, models.text.dim);
        }
        await writer.add(batch.samples, imageEmb, textEmb);
        events.embedded(n);
      }
      await writer.finish();
      return writer.rows;
    } catch (err) {
      await writer.abort();
      throw err;
    }
  }
}

export interface PartitionPlan {
  /** The partitions still to do: not finished in the output folder, and with at least one element. */
  todo: number[];
  /** Partitions already finished (logged). */
  finished: number;
  /** Elements of the partitions to do. */
  elementsLeft: number;
  /** The run's progress line; its total starts from the source's estimate of samples per element
   * (webdataset: --wds-number-file-per-input-file per tar). */
  progress: Progress;
}

/** What a run (sequential or the BullMQ coordinator) has left to do, and its progress line. */
export function planPartitions(source: Source, o: PipelineOptions): PartitionPlan {
  const wanted = o.partitions ?? Array.from({ length: o.partitionCount }, (_, i) => i);
  let finished = 0;
  let elementsLeft = 0;
  const todo = wanted.filter((p) => {
    if (isPartitionDone(partitionPaths(o.outputFolder, partitionName(p, o.partitionCount)), o)) {
      finished++;
      return false;
    }
    const elements = elementsOf(source, p, o.partitionCount).length;
    elementsLeft += elements;
    // clip-retrieval writes nothing for an empty partition
    return elements > 0;
  });
  if (finished > 0) log.info(`${finished} partition(s) already finished, skipped`);
  const perElement = source.estimatedSamples / Math.max(1, source.elements.length);
  const progress = new Progress({ label: 'inference', total: Math.round(elementsLeft * perElement), unit: 'samples' });
  return { todo, finished, elementsLeft, progress };
}

export async function runInference(source: Source, models: Models, o: PipelineOptions, openRowFile: OpenRowFile): Promise<RunSummary> {
  const started = Date.now();
  const summary: RunSummary = { partitionsDone: 0, partitionsSkipped: 0, samples: 0, skipped: 0, seconds: 0 };
  const embedder = new PartitionEmbedder(models, o);
  const plan = planPartitions(source, o);
  const { todo, progress } = plan;
  summary.partitionsSkipped = plan.finished;
  // The ETA's total, once partitions finish: what they actually held per element.
  let elementsLeft = plan.elementsLeft;
  let elementsRead = 0;
  const events: PartitionEvents = {
    embedded: (n) => {
      summary.samples += n;
      progress.item(true, n);
    },
    skipped: (s) => {
      summary.skipped++;
      progress.item(false);
      log.warn(`skipped ${s.where}: ${s.skipped}`);
    },
  };

  try {
    for (const p of todo) {
      const name = partitionName(p, o.partitionCount);
      const elements = elementsOf(source, p, o.partitionCount);
      const rows = await embedder.run(source, elements, partitionPaths(o.outputFolder, name), openRowFile, join(o.outputFolder, '.duckdb-tmp'), events);
      summary.partitionsDone++;
      elementsRead += elements.length;
      elementsLeft -= elements.length;
      const seen = summary.samples + summary.skipped;
      progress.setTotal(Math.round(seen + (elementsLeft * seen) / Math.max(1, elementsRead)));
      log.info(`partition ${name}: ${rows} samples written`);
    }
  } finally {
    progress.stop();
  }
  summary.seconds = (Date.now() - started) / 1000;
  return summary;
}
