// `embeddings-indices-hosting/run.ts inference`: clip-retrieval inference's options and defaults
// (snake_case accepted), with CLIP in onnxruntime from a local model folder.
import { availableParallelism } from 'node:os';
import { CliError, defineCli } from '../../lib/cli.ts';
import { checkQueueName, checkRedisUrl } from '../../lib/distributor/checks.ts';
import { errorMessage, log } from '../../lib/log.ts';
import { NpyWriter } from '../../lib/npy.ts';
import { DEVICES, locateModelFiles, MODEL_DTYPES, ModelFolderError, type Device, type ModelDtype } from './clip-model.ts';
import { loadModels, runInference, type ModelSettings, type PipelineOptions, type RunSummary } from './inference.ts';
import { readPreprocessorConfig } from './preprocess.ts';
import { openSource, partitionCount, SourceError, type InputFormat, type ParquetColumns, type SourceOptions } from './sources.ts';

const cores = availableParallelism();

export const cli = defineCli({
  command: 'npx tsx embeddings-indices-hosting/run.ts inference',
  summary: 'CLIP image and text embeddings of webdataset / files / parquet samples, in clip-retrieval inference\'s output layout.',
  positionals: ['more input paths (a shell-expanded brace pattern)'],
  flags: {
    'input-dataset': { type: 'string', required: true, help: 'Folder (files), tar / folder of tars / brace pattern such as "out/{00000..00041}.tar" (webdataset), parquet file or folder (parquet)' },
    'output-folder': { type: 'string', required: true, help: 'Where img_emb/, text_emb/ and metadata/ go' },
    'input-format': { type: 'string', default: 'files', choices: ['files', 'webdataset', 'parquet'], help: 'Layout of the input' },
    'clip-model': { type: 'string', required: true, help: 'Model folder in the Hugging Face ONNX layout (onnx/vision_model.onnx, onnx/text_model.onnx, tokenizer.json, preprocessor_config.json, config.json); see the README' },
    dtype: {
      type: 'string', default: 'fp32', choices: MODEL_DTYPES,
      help: 'Model variant, as Transformers.js names them: fp32 reads onnx/vision_model.onnx; int8 onnx/vision_model_int8.onnx, q8 _quantized, uint8, fp16, q4, q4f16, bnb4 likewise. int8 runs ViT-B/32 about 3x faster on CPU (cosine to fp32 0.9998; README "Quantised models")',
    },
    'batch-size': { type: 'int', default: 256, help: 'Samples read, preprocessed and embedded together (clip-retrieval\'s batch); the model takes them in runs of --rows-per-run' },
    'num-prepro-workers': { type: 'int', default: Math.max(2, cores), help: 'Images decoded and preprocessed at once (native, on libuv\'s thread pool)' },
    'intra-op-threads': { type: 'int', default: cores, help: 'onnxruntime threads per model run (0 = onnxruntime\'s default)' },
    'rows-per-run': { type: 'int', default: null, help: 'Rows per onnxruntime run: each batch goes through the model in runs of at most this many (0 = the whole batch at once). Default 16 on cpu (faster there than big runs), the whole batch on other devices' },
    device: { type: 'string', default: 'cpu', choices: DEVICES, help: 'onnxruntime execution provider; a provider that cannot start is an error, never a fall-back to CPU' },
    'enable-text': { type: 'bool', default: true, help: 'Embed captions' },
    'enable-image': { type: 'bool', default: true, help: 'Embed images' },
    'enable-metadata': { type: 'bool', default: false, help: 'Add the samples\' json fields (files / webdataset) or other columns (parquet) to metadata' },
    'write-batch-size': { type: 'int', default: 1_000_000, help: 'Samples per output partition (sets the partition count, as clip-retrieval)' },
    'wds-image-key': { type: 'string', default: 'jpg', help: 'webdataset member holding the image' },
    'wds-caption-key': { type: 'string', default: 'txt', help: 'webdataset member holding the caption' },
    'wds-number-file-per-input-file': { type: 'int', default: 10000, help: 'Samples per tar assumed when counting partitions' },
    'parquet-image-column': { type: 'string', default: 'jpg', help: 'parquet input: column with the image bytes (download_images names it after --encode-format)' },
    'parquet-caption-column': { type: 'string', default: 'caption', help: 'parquet input: caption column' },
    'output-partition-count': { type: 'int', default: null, help: 'Partition count instead of the one from --write-batch-size' },
    'distribution-strategy': {
      type: 'string', default: 'sequential', choices: ['sequential', 'bullmq'], aliases: ['distributor'],
      help: 'sequential (this process) or bullmq (one job per partition on Redis, for workers on several machines: run.ts inference --worker); also spelt --distributor. pyspark / slurm are clip-retrieval\'s',
    },
    'redis-url': { type: 'string', default: null, help: 'Redis for --distributor bullmq, e.g. redis://host:6379' },
    'queue-name': { type: 'string', default: 'inference', help: 'BullMQ queue for --distributor bullmq; one per concurrent run' },
    'max-partition-retry': { type: 'int', default: 1, min: 0, help: '--distributor bullmq: further tries of a partition whose job failed (a worker killed mid-partition does not count: its job is taken over)' },
    'cache-path': { type: 'string', default: null, help: 'Accepted for clip-retrieval compatibility; tars are read in place' },
    'use-jit': { type: 'bool', default: false, help: 'Accepted for compatibility; onnxruntime optimises the graph itself' },
    'use-mclip': { type: 'bool', default: false, help: 'Not supported (multilingual CLIP); must stay False' },
    'enable-wandb': { type: 'bool', default: false, help: 'Not supported; must stay False' },
  },
  epilog: `Examples:
  npx tsx embeddings-indices-hosting/run.ts inference --input_dataset "out/{00000..00041}.tar" --input_format webdataset \\
      --output_folder emb --clip_model models/clip-vit-base-patch32 --enable_metadata True
  npx tsx embeddings-indices-hosting/run.ts inference --input-dataset out --input-format parquet --output-folder emb --clip-model models/clip --device cuda
Several machines (see the README): the same command plus --distributor bullmq --redis_url redis://10.0.0.1:6379, then on each machine
  npx tsx embeddings-indices-hosting/run.ts inference --worker --redis-url redis://10.0.0.1:6379 --output-folder emb   (--worker --help for its flags)`,
});

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('--worker')) return (await import('./worker.ts')).main(argv.filter((a) => a !== '--worker'));
  const cmd = cli.start(argv, (f) => {
    if (f.batchSize < 1) throw new CliError('--batch-size must be at least 1');
    if (f.numPreproWorkers < 1) throw new CliError('--num-prepro-workers must be at least 1');
    if (f.intraOpThreads < 0) throw new CliError('--intra-op-threads must be 0 or more');
    if (f.rowsPerRun !== null && f.rowsPerRun < 0) throw new CliError('--rows-per-run must be 0 or more');
    if (f.writeBatchSize < 1) throw new CliError('--write-batch-size must be at least 1');
    if (f.outputPartitionCount !== null && f.outputPartitionCount < 1) throw new CliError('--output-partition-count must be at least 1');
    if (!f.enableImage && !f.enableText) throw new CliError('--enable-image and --enable-text are both False: nothing to embed');
    if (f.useMclip) throw new CliError('--use-mclip True is not supported: export the multilingual text model to ONNX as text_model.onnx instead');
    if (f.enableWandb) throw new CliError('--enable-wandb True is not supported');
    if (f.distributionStrategy === 'bullmq') {
      if (f.redisUrl === null) throw new CliError('--distributor bullmq needs --redis-url, e.g. redis://127.0.0.1:6379');
      checkRedisUrl(f.redisUrl);
      checkQueueName(f.queueName);
    }
  });
  if (typeof cmd === 'number') return cmd;
  const f = cmd.flags;
  // Preprocessing runs on libuv's pool: make it as wide as the images kept in flight.
  process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, f.numPreproWorkers));

  try {
    // Inputs first: listing them is cheap, loading a model is not.
    const inputs = [f.inputDataset, ...cmd.positionals];
    const format = f.inputFormat as InputFormat;
    const sourceOptions: SourceOptions = {
      enableImage: f.enableImage,
      enableText: f.enableText,
      enableMetadata: f.enableMetadata,
      wdsImageKey: f.wdsImageKey,
      wdsCaptionKey: f.wdsCaptionKey,
      wdsNumberFilePerInputFile: f.wdsNumberFilePerInputFile,
    };
    const parquetColumns: ParquetColumns = { image: f.parquetImageColumn, caption: f.parquetCaptionColumn };
    const source = await openSource(format, inputs, sourceOptions, parquetColumns);
    const count = f.outputPartitionCount ?? partitionCount(source, f.writeBatchSize);
    log.info(`${source.elements.length} ${source.format === 'files' ? 'samples' : `${source.format} files`}, about ${source.estimatedSamples} samples, ${count} partition(s)`);

    const model: ModelSettings = { clipModel: f.clipModel, dtype: f.dtype as ModelDtype, device: f.device as Device, intraOpThreads: f.intraOpThreads, rowsPerRun: f.rowsPerRun, enableImage: f.enableImage, enableText: f.enableText };
    const pipeline: PipelineOptions = {
      outputFolder: f.outputFolder,
      batchSize: f.batchSize,
      numPreproWorkers: f.numPreproWorkers,
      partitionCount: count,
      partitions: null,
      enableImage: f.enableImage,
      enableText: f.enableText,
      enableMetadata: f.enableMetadata,
    };
    let summary: RunSummary;
    let failed: string[] = [];
    if (f.distributionStrategy === 'bullmq') {
      // The coordinator embeds nothing: it checks the model folder (a bad one fails here, not on
      // every worker) and queues the partitions. bullmq and ioredis load only in this mode.
      const files = locateModelFiles(f.clipModel, { image: f.enableImage, text: f.enableText }, f.dtype as ModelDtype);
      if (f.enableImage) readPreprocessorConfig(files.preprocessorConfig);
      const { runInferenceBullmq } = await import('./distributed.ts');
      const { cancelQueuedJobs } = await import('../../lib/distributor/bullmq-coordinator.ts');
      // Ctrl-C: withdraw the partitions no worker has started; started ones finish on their workers.
      const onSigint = (): void => void cancelQueuedJobs().finally(() => process.exit(130));
      process.once('SIGINT', onSigint);
      const res = await runInferenceBullmq({
        source, format, inputs, sourceOptions, parquetColumns, pipeline, model,
        redisUrl: f.redisUrl!, queueName: f.queueName, maxPartitionRetry: f.maxPartitionRetry,
      }).finally(() => process.off('SIGINT', onSigint));
      summary = res;
      failed = res.failed;
    } else {
      const models = await loadModels(model);
      summary = await runInference(source, models, pipeline, (path, cols) => NpyWriter.create(path, 'float16', cols));
    }
    const rate = summary.seconds > 0 ? summary.samples / summary.seconds : 0;
    log.info(
      `done: ${summary.samples} samples embedded in ${summary.partitionsDone} partition(s) (${summary.partitionsSkipped} already finished), ` +
        `${summary.skipped} skipped, ${summary.seconds.toFixed(1)} s, ${rate.toFixed(1)} samples/s`,
    );
    if (failed.length > 0) {
      process.stderr.write(`error: ${failed.length} partition(s) failed: ${failed.slice(0, 20).join(', ')}${failed.length > 20 ? ', ...' : ''}; rerun the same command to finish them\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    if (err instanceof ModelFolderError || err instanceof SourceError) {
      process.stderr.write(`error: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`error: ${errorMessage(err)}\n`);
    return 1;
  }
}
