// `run.ts back`: clip-retrieval back. Serves the indices listed in indices_paths.json over HTTP
// (/indices-list, /knn-service, /metadata, /config.json, /metrics, /metrics-summary) and the
// search page at /. Prints "listening on <url>" once ready; SIGINT/SIGTERM close it cleanly.
import { availableParallelism } from 'node:os';
import { CliError, defineCli } from '../../lib/cli.ts';
import { HttpClient } from '../../lib/http/client.ts';
import { loadFaiss } from '../../lib/faiss/index.ts';
import { errorMessage, log } from '../../lib/log.ts';
import { MODEL_DTYPES, type ModelDtype } from '../inference/clip-model.ts';
import { closeIndices, DEFAULT_COLUMNS, openIndices, readIndicesPaths } from './indices.ts';
import { SearchThreads } from './search-threads.ts';
import { createBack } from './server.ts';

const UNUSED = 'accepted for clip-retrieval compatibility; no effect here (see the README)';

export const backCli = defineCli({
  command: 'npx tsx embeddings-indices-hosting/run.ts back',
  summary: 'Serve kNN queries over the indices in indices_paths.json, and the search page (clip-retrieval back).',
  flags: {
    'indices-paths': { type: 'string', default: 'indices_paths.json', help: 'JSON {"name": "index_folder"} or {"name": {"indice_folder": ..., "clip_model": ..., "columns_to_return": [...], "enable_faiss_memory_mapping": true}}' },
    port: { type: 'int', default: 1234, help: 'Port to listen on (0 = any free port)' },
    host: { type: 'string', default: '127.0.0.1', help: 'Address to listen on (0.0.0.0 for every interface)' },
    'clip-model': { type: 'string', default: null, help: 'Model folder (Hugging Face ONNX layout) for text and image queries; without one only embedding_input works' },
    dtype: { type: 'string', default: 'fp32', choices: MODEL_DTYPES, help: 'Variant of the CLIP model for queries (onnx/text_model_int8.onnx for int8, as run.ts inference --dtype): use the one the index was embedded with' },
    'enable-faiss-memory-mapping': { type: 'bool', default: false, help: 'Memory-map the faiss indices instead of reading them into RAM' },
    'columns-to-return': { type: 'list', default: DEFAULT_COLUMNS, help: 'Metadata columns returned (those the metadata has)' },
    'url-column': { type: 'string', default: 'url', help: 'The column the page shows images from (config.json urlColumn)' },
    'default-backend': { type: 'string', default: null, help: 'config.json defaultBackend (default: the URL the page came from)' },
    'allow-private-addresses': { type: 'bool', default: false, help: 'Let image_url fetch loopback / private / link-local addresses (local demo, tests)' },
    'image-url-timeout': { type: 'float', default: 10, help: 'Deadline in seconds for fetching an image_url (connect + whole body)' },
    'max-image-bytes': { type: 'string', default: '10MB', help: 'Largest image accepted (image_url body or decoded base64 image)' },
    'max-body-bytes': { type: 'string', default: '16MB', help: 'Largest request body' },
    'max-result-ids': { type: 'int', default: 10000, help: 'Largest num_images / num_result_ids / metadata ids per request' },
    'nb-cores': { type: 'int', default: null, help: 'Cores to use: threads for each model run, and shared by the faiss searches in flight (default: all cores)' },
    'sq8-copy': { type: 'bool', default: true, help: 'Inner-product IVF-SQfp16 indices: scan an 8-bit copy of the lists (<index>.sq8 beside it, written at the first start) and compute float16 distances only where they can change the results: the same results from about half the bytes' },
    'metadata-row-file': { type: 'bool', default: true, help: 'Read metadata through <index>/metadata-rows/ (written once from the parquet files); False: DuckDB over the parquet files at each query' },
    'enable-hdf5': { type: 'bool', default: false, help: UNUSED },
    'reorder-metadata-by-ivf-index': { type: 'bool', default: false, help: UNUSED },
    'enable-mclip-option': { type: 'bool', default: false, help: UNUSED },
    'use-jit': { type: 'bool', default: false, help: UNUSED },
    'use-arrow': { type: 'bool', default: false, help: UNUSED },
    'provide-safety-model': { type: 'bool', default: false, help: `${UNUSED}; use_safety_model filters on the NSFW column` },
    'provide-violence-detector': { type: 'bool', default: false, help: UNUSED },
    'provide-aesthetic-embeddings': { type: 'bool', default: false, help: UNUSED },
  },
  epilog: [
    'Example: npx tsx embeddings-indices-hosting/run.ts back --indices-paths indices_paths.json --clip-model models/clip --port 1234 --enable-faiss-memory-mapping',
    'Then open http://127.0.0.1:1234/ or POST {"text": "a cat", "modality": "image", "num_images": 10, "indice_name": null} to /knn-service.',
  ].join('\n'),
});

function bytes(flag: string, raw: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*$/i.exec(raw);
  if (!m) throw new CliError(`--${flag}: expected a size like 10MB, got ${JSON.stringify(raw)}`);
  return Math.floor(Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G']);
}

export async function main(argv: string[]): Promise<number> {
  const cmd = backCli.start(argv, (f) => {
    const limits = { maxImageBytes: bytes('max-image-bytes', f.maxImageBytes), maxBodyBytes: bytes('max-body-bytes', f.maxBodyBytes) };
    if (f.port < 0 || f.port > 65535) throw new CliError('--port must be 0-65535');
    if (f.maxResultIds < 1) throw new CliError('--max-result-ids must be >= 1');
    if (!(f.imageUrlTimeout > 0)) throw new CliError('--image-url-timeout must be > 0');
    return limits;
  });
  if (typeof cmd === 'number') return cmd;
  const { flags, checked: { maxImageBytes, maxBodyBytes } } = cmd;
  const threads = flags.nbCores ?? availableParallelism();
  const searchThreads = new SearchThreads(threads);
  let indices;
  try {
    loadFaiss();
    const { settings, notes } = readIndicesPaths(flags.indicesPaths, {
      clip_model: flags.clipModel,
      enable_faiss_memory_mapping: flags.enableFaissMemoryMapping,
      columns_to_return: flags.columnsToReturn,
    });
    for (const n of notes) log.info(n);
    indices = await openIndices(settings, { threads, dtype: flags.dtype as ModelDtype, sq8Copy: flags.sq8Copy, searchThreads, rowFile: flags.metadataRowFile, log: (m) => log.info(m) });
  } catch (err) {
    log.error(errorMessage(err));
    return 1;
  }
  const http = new HttpClient({ allowPrivateAddresses: flags.allowPrivateAddresses, userAgent: 'cah-prepro-back/0.1' });
  const { server } = createBack({
    indices,
    http,
    searchThreads,
    limits: { maxResultIds: flags.maxResultIds, maxImageBytes, imageUrlTimeoutMs: flags.imageUrlTimeout * 1000 },
    maxBodyBytes,
    defaultBackend: flags.defaultBackend,
    urlColumn: flags.urlColumn,
    log: (m) => log.error(m),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(flags.port, flags.host, () => resolve());
    });
  } catch (err) {
    log.error(`cannot listen on ${flags.host}:${flags.port}: ${errorMessage(err)}`);
    closeIndices(indices);
    await http.close();
    return 1;
  }
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : flags.port;
  const shown = flags.host === '0.0.0.0' || flags.host === '::' ? 'localhost' : flags.host.includes(':') ? `[${flags.host}]` : flags.host;
  log.info(`listening on http://${shown}:${port}/ (${indices.size} indices: ${[...indices.keys()].join(', ')}); Ctrl-C stops`);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  log.info(`${signal}: closing`);
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  closeIndices(indices);
  await http.close();
  return 0;
}
