// `run.ts inference --worker`: embeds partitions queued by `run.ts inference --distributor bullmq`
// (lib/distributor/bullmq-worker.ts takes the jobs; distributed.ts's handler embeds and commits).
// Start one per machine; every machine must see the output folder (its own path for it), and the
// inputs and the model folder at the coordinator's paths (or pass --clip-model).
import { availableParallelism } from 'node:os';
import { CliError, defineCli } from '../../lib/cli.ts';
import { queueWorkerFlags, runQueueWorker, toQueueWorkerSettings } from '../../lib/distributor/bullmq-worker.ts';
import { DEVICES, type Device } from './clip-model.ts';
import { partitionHandler } from './distributed.ts';

export const workerCli = defineCli({
  command: 'npx tsx embeddings-indices-hosting/run.ts inference --worker',
  summary: 'Embed inference partitions from a BullMQ queue (the workers of inference --distributor bullmq).',
  flags: {
    ...queueWorkerFlags('inference', 'Partitions embedded at once by this process (each runs the model with its intra-op threads: 1 suits most machines)'),
    'clip-model': { type: 'string', default: null, help: "The model folder as this machine sees it (default: the coordinator's --clip-model path)" },
    device: { type: 'string', default: null, choices: DEVICES, help: "onnxruntime execution provider on this machine (default: the coordinator's --device)" },
    'intra-op-threads': { type: 'int', default: null, help: "onnxruntime threads per model run on this machine (default: the coordinator's)" },
    'num-prepro-workers': { type: 'int', default: null, help: "Images preprocessed at once on this machine (default: the coordinator's)" },
  },
  epilog: `
Start the coordinator on one machine, then a worker on each machine that sees the output folder:
  npx tsx embeddings-indices-hosting/run.ts inference --input_dataset "/shared/out/{00000..00041}.tar" --input_format webdataset \\
      --output_folder /shared/emb --clip_model /shared/models/clip --distributor bullmq --redis_url redis://10.0.0.1:6379
  npx tsx embeddings-indices-hosting/run.ts inference --worker --redis-url redis://10.0.0.1:6379 --output-folder /shared/emb
SIGTERM or Ctrl-C finishes the partitions in progress and exits; a second one puts them back on the queue at once.`,
});

export async function main(argv: string[]): Promise<number> {
  const cmd = workerCli.start(argv, (f) => {
    if (f.intraOpThreads !== null && f.intraOpThreads < 0) throw new CliError('--intra-op-threads must be 0 or more');
    if (f.numPreproWorkers !== null && f.numPreproWorkers < 1) throw new CliError('--num-prepro-workers must be at least 1');
    return toQueueWorkerSettings(f);
  });
  if (typeof cmd === 'number') return cmd;
  const f = cmd.flags;
  // Preprocessing runs on libuv's pool: make it as wide as the images kept in flight.
  process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, f.numPreproWorkers ?? availableParallelism()));
  return runQueueWorker(
    cmd.checked,
    partitionHandler({ clipModel: f.clipModel, device: f.device as Device | null, intraOpThreads: f.intraOpThreads, numPreproWorkers: f.numPreproWorkers }),
  );
}
