// img2dataset 1.47's `download()` options with the same defaults, plus our network additions
// (contracts.md section 3), then the validation img2dataset does before any I/O.
import { byteSizeFlag, CliError, defineCli, type ParsedFlags } from '../lib/cli.ts';
import { checkQueueName, checkRedisUrl } from '../lib/distributor/checks.ts';
import { RESIZER_ENGINES, type ResizerEngine } from './resizer.ts';

export const RESIZE_MODES = ['no', 'border', 'keep_ratio', 'keep_ratio_largest', 'center_crop'] as const;
export const ENCODE_FORMATS = ['jpg', 'png', 'webp'] as const;
export const OUTPUT_FORMATS = ['files', 'webdataset', 'parquet', 'dummy'] as const;
export const INPUT_FORMATS = [
  'txt', 'txt.gz', 'csv', 'csv.gz', 'tsv', 'tsv.gz', 'json', 'json.gz', 'jsonl', 'jsonl.gz', 'parquet',
] as const;
export const HASHES = ['md5', 'sha256', 'sha512'] as const;
export const INTERPOLATIONS = ['nearest', 'linear', 'bilinear', 'cubic', 'bicubic', 'area', 'lanczos', 'lanczos4'] as const;
export const INCREMENTAL_MODES = ['incremental', 'overwrite', 'extend'] as const;
export const DISTRIBUTORS = ['multiprocessing', 'bullmq'] as const;

/** Metadata names an extra column may not take (img2dataset's arguments_validator). */
export const RESERVED_COLUMNS = [
  'key', 'caption', 'url', 'width', 'height', 'original_width', 'original_height', 'status', 'error_message', 'exif',
  'md5', 'sha256', 'sha512',
];
export const DEFAULT_DISALLOWED_DIRECTIVES = ['noai', 'noimageai', 'noindex', 'noimageindex'];

export const FLAGS = {
  'url-list': { type: 'string', required: true, help: 'Input file, or a folder whose *.<input-format> files are read in sorted order' },
  'image-size': { type: 'int', min: 1, default: 256, help: 'Target side in pixels' },
  'output-folder': { type: 'string', default: 'images', help: 'Output folder' },
  'processes-count': { type: 'int', min: 1, default: 1, help: 'Worker processes; each owns whole shards' },
  'thread-count': { type: 'int', min: 1, default: 256, help: 'Downloads in flight per worker process' },
  'resize-mode': { type: 'string', default: 'border', choices: RESIZE_MODES, help: 'How images are fitted to image-size' },
  'resize-only-if-bigger': { type: 'bool', default: false, help: 'Only resize images larger than image-size' },
  'upscale-interpolation': { type: 'string', default: 'lanczos', help: `Interpolation when enlarging (${INTERPOLATIONS.join(', ')})` },
  'downscale-interpolation': { type: 'string', default: 'area', help: `Interpolation when shrinking (${INTERPOLATIONS.join(', ')})` },
  'encode-quality': { type: 'int', default: 95, help: 'JPEG/WebP quality 0-100; PNG compression level 0-9' },
  'encode-format': { type: 'string', default: 'jpg', choices: ENCODE_FORMATS, help: 'Stored image format' },
  'skip-reencode': { type: 'bool', default: false, help: 'Keep the original bytes when nothing changed and the format already matches' },
  'output-format': { type: 'string', default: 'files', help: `Output format (${OUTPUT_FORMATS.join(', ')})` },
  'input-format': { type: 'string', default: 'txt', choices: INPUT_FORMATS, help: 'Input format' },
  'url-col': { type: 'string', default: 'url', help: 'Input column holding the URL (not used for txt)' },
  'caption-col': { type: 'string', default: null, help: 'Input column holding the caption; also turns on .txt output' },
  'bbox-col': { type: 'string', default: null, help: 'Input column of [x_min,y_min,x_max,y_max] boxes in [0,1] to blur; also saved' },
  'number-sample-per-shard': { type: 'int', min: 1, default: 10000, help: 'Rows per shard' },
  'extract-exif': { type: 'bool', default: true, help: 'Add the EXIF tags as a JSON string to the metadata' },
  'save-additional-columns': { type: 'list', default: null, help: 'Extra input columns copied to the metadata, e.g. \'["NSFW","similarity"]\'' },
  timeout: { type: 'float', default: 10, help: 'Seconds per request: an absolute deadline for connect, headers and body' },
  'enable-wandb': { type: 'bool', default: false, help: 'Log to Weights & Biases (not available here: accepted and ignored with a warning)' },
  'wandb-project': { type: 'string', default: 'img2dataset', help: 'Weights & Biases project' },
  'oom-shard-count': { type: 'int', min: 0, default: 5, help: 'Zero-padding width of shard ids' },
  'compute-hash': { type: 'string', default: 'sha256', help: 'Hash of the downloaded bytes: None, md5, sha256, sha512' },
  'verify-hash': { type: 'list', default: null, help: 'Check the downloaded bytes against a column: \'["column","sha256"]\'' },
  distributor: { type: 'string', default: 'multiprocessing', help: `How shards are spread: ${DISTRIBUTORS.join(', ')}` },
  'subjob-size': { type: 'int', min: 1, default: 1000, help: 'pyspark only in img2dataset: accepted and unused' },
  retries: { type: 'int', min: 0, default: 0, help: 'Further attempts per URL after the first' },
  'disable-all-reencoding': { type: 'bool', default: false, help: 'Store the downloaded bytes as they are (no decode, no checks)' },
  'min-image-size': { type: 'int', min: 0, default: 0, help: 'Reject images whose smaller side is below this' },
  'max-image-area': { type: 'string', default: 'inf', help: 'Reject images with more pixels than this (width x height)' },
  'max-aspect-ratio': { type: 'string', default: 'inf', help: 'Reject images whose long/short side ratio exceeds this' },
  'incremental-mode': { type: 'string', default: 'incremental', choices: INCREMENTAL_MODES, help: 'incremental: skip finished shards; overwrite: start afresh; extend: add shards after the last' },
  'max-shard-retry': { type: 'int', min: 0, default: 1, help: 'Extra passes over failed shards at the end' },
  'user-agent-token': { type: 'string', default: null, help: 'Token added to the User-Agent and matched in X-Robots-Tag rules' },
  'disallowed-header-directives': { type: 'list', default: null, help: `X-Robots-Tag directives that refuse an image; '[]' disables (None = ${JSON.stringify(DEFAULT_DISALLOWED_DIRECTIVES)})` },
  'ignore-ssl-certificate': { type: 'bool', default: false, help: 'Skip TLS certificate checks (not yet implemented: refused)' },
  // Our additions.
  'allow-private-addresses': { type: 'bool', default: false, help: 'Allow loopback/private/link-local targets (tests, the demo)' },
  'max-image-bytes': { type: 'string', default: '50MB', help: 'Largest body accepted per image' },
  'max-image-pixels': { type: 'int', min: 1, default: 268402689, help: 'Larger images fail as failed_to_resize without being decoded' },
  'per-host-connections': { type: 'int', min: 1, default: 16, help: 'Concurrent connections per host, per worker process' },
  'resize-engine': { type: 'string', default: 'fast', choices: RESIZER_ENGINES, help: 'fast: libjpeg-turbo decoding at reduced size + our resampler (about half the CPU of sharp); exact: full-size decoding, byte-identical to img2dataset output for plain JPEGs (area and lanczos interpolation); sharp: libvips for everything' },
  'respect-robots-txt': { type: 'bool', default: false, help: 'Honour robots.txt (not yet implemented: refused when True)' },
  'redis-url': { type: 'string', default: null, help: 'Redis for --distributor bullmq, e.g. redis://host:6379 (workers: download_images/worker.ts)' },
  'queue-name': { type: 'string', default: 'download_images', help: 'BullMQ queue for --distributor bullmq; one per concurrent run' },
} as const;

export const cli = defineCli({
  command: 'npx tsx download_images/run.ts',
  summary: 'Download, resize and package images from URL lists: a drop-in for img2dataset 1.47.',
  flags: FLAGS,
  epilog: `
Example (the LAION-400M command):
  npx tsx download_images/run.ts --url_list laion400m-meta --input_format parquet --url_col URL \\
    --caption_col TEXT --output_format webdataset --output_folder out --processes_count 16 \\
    --thread_count 128 --image_size 256 --save_additional_columns '["NSFW","similarity","LICENSE"]'`,
});

export type Flags = ParsedFlags<typeof FLAGS>;

/** Everything a run needs, validated and normalised; plain data so it can be sent to workers. */
export interface DownloadConfig {
  urlList: string;
  outputFolder: string;
  imageSize: number;
  processesCount: number;
  threadCount: number;
  resizeMode: (typeof RESIZE_MODES)[number];
  resizeOnlyIfBigger: boolean;
  upscaleInterpolation: string;
  downscaleInterpolation: string;
  encodeQuality: number;
  encodeFormat: (typeof ENCODE_FORMATS)[number];
  skipReencode: boolean;
  outputFormat: (typeof OUTPUT_FORMATS)[number];
  inputFormat: (typeof INPUT_FORMATS)[number];
  urlCol: string;
  captionCol: string | null;
  bboxCol: string | null;
  numberSamplePerShard: number;
  extractExif: boolean;
  saveAdditionalColumns: string[];
  timeoutMs: number;
  enableWandb: boolean;
  wandbProject: string;
  oomShardCount: number;
  computeHash: (typeof HASHES)[number] | null;
  verifyHash: { column: string; hash: (typeof HASHES)[number] } | null;
  distributor: (typeof DISTRIBUTORS)[number];
  retries: number;
  disableAllReencoding: boolean;
  minImageSize: number;
  maxImageArea: number;
  maxAspectRatio: number;
  incrementalMode: (typeof INCREMENTAL_MODES)[number];
  maxShardRetry: number;
  userAgentToken: string | null;
  disallowedHeaderDirectives: string[];
  allowPrivateAddresses: boolean;
  maxImageBytes: number;
  maxImagePixels: number;
  perHostConnections: number;
  resizeEngine: ResizerEngine;
  redisUrl: string | null;
  queueName: string;
}

const isNone = (v: string | null | undefined): boolean => v === null || v === undefined || v === 'None' || v === '';

function parseLimit(raw: string, flag: string): number {
  const t = raw.trim().toLowerCase();
  if (t === 'inf' || t === 'infinity' || t === 'float("inf")') return Infinity;
  const n = Number(t);
  if (t === '' || Number.isNaN(n)) throw new CliError(`--${flag}: expected a number or inf, got "${raw}"`);
  if (!(n > 0)) throw new CliError(`--${flag} must be more than 0, got ${raw}`);
  return n;
}

/** img2dataset's arguments_validator plus our own checks; throws CliError with one line. */
export function toConfig(f: Flags): DownloadConfig {
  const outputFormat = f.outputFormat as string;
  if (outputFormat === 'tfrecord') throw new CliError('--output-format tfrecord is not supported (needs TensorFlow); use webdataset, files, parquet or dummy');
  if (!(OUTPUT_FORMATS as readonly string[]).includes(outputFormat)) throw new CliError(`Invalid output format ${outputFormat}`);
  if (f.distributor === 'pyspark' || f.distributor === 'ray') {
    throw new CliError(`Distributor ${f.distributor} not supported here; use multiprocessing (one machine) or bullmq (several)`);
  }
  if (!(DISTRIBUTORS as readonly string[]).includes(f.distributor)) throw new CliError(`Distributor ${f.distributor} not supported`);
  for (const [flag, v] of [['upscale-interpolation', f.upscaleInterpolation], ['downscale-interpolation', f.downscaleInterpolation]] as const) {
    if (!(INTERPOLATIONS as readonly string[]).includes(v.toLowerCase())) throw new CliError(`--${flag}: invalid interpolation ${v}`);
  }
  if (f.encodeFormat === 'png' && (f.encodeQuality < 0 || f.encodeQuality > 9)) {
    throw new CliError('For png, encode quality represents compression which must be between 0 and 9, got ' + f.encodeQuality);
  }
  if (f.encodeFormat !== 'png' && (f.encodeQuality < 0 || f.encodeQuality > 100)) {
    throw new CliError(`--encode-quality must be between 0 and 100 for ${f.encodeFormat}, got ${f.encodeQuality}`);
  }
  const computeHash = isNone(f.computeHash) ? null : f.computeHash;
  if (computeHash !== null && !(HASHES as readonly string[]).includes(computeHash)) throw new CliError(`Unsupported hash to compute: ${computeHash}`);
  let verifyHash: DownloadConfig['verifyHash'] = null;
  if (f.verifyHash && f.verifyHash.length > 0) {
    if (f.verifyHash.length !== 2) throw new CliError('--verify-hash takes [column_name, hash_type]');
    const [column, hash] = f.verifyHash as [string, string];
    if (!(HASHES as readonly string[]).includes(hash)) throw new CliError(`Unsupported hash to verify: ${hash}`);
    if (hash !== computeHash) throw new CliError(`verify_hash and compute_hash must be the same but got ${hash} and ${computeHash}`);
    verifyHash = { column, hash: hash as (typeof HASHES)[number] };
  }
  const extra = [...(f.saveAdditionalColumns ?? [])];
  for (const c of extra) {
    if (RESERVED_COLUMNS.includes(c)) throw new CliError(`You cannot use in save_additional_columns the name ${c}; it is already a metadata field`);
  }
  const bboxCol = isNone(f.bboxCol) ? null : f.bboxCol;
  if (bboxCol !== null && !extra.includes(bboxCol)) extra.push(bboxCol);
  if (f.respectRobotsTxt) throw new CliError('--respect-robots-txt True is not yet implemented');
  if (f.ignoreSslCertificate) throw new CliError('--ignore-ssl-certificate True is not yet implemented');
  if (f.numberSamplePerShard < 1) throw new CliError('--number-sample-per-shard must be at least 1');
  if (!(f.timeout > 0)) throw new CliError(`--timeout must be more than 0 seconds, got ${f.timeout}`);
  if (f.outputFolder.trim() === '') throw new CliError('--output-folder must not be empty');
  if (f.urlList.trim() === '') throw new CliError('--url-list must not be empty');
  const maxImageBytes = byteSizeFlag('--max-image-bytes', f.maxImageBytes);
  if (f.threadCount < 1 || f.processesCount < 1) throw new CliError('--thread-count and --processes-count must be at least 1');
  const redisUrl = isNone(f.redisUrl) ? null : f.redisUrl;
  if (f.distributor === 'bullmq') {
    if (redisUrl === null) throw new CliError('--distributor bullmq needs --redis-url, e.g. redis://127.0.0.1:6379');
    checkRedisUrl(redisUrl);
    checkQueueName(f.queueName);
  }
  const directives = f.disallowedHeaderDirectives === null ? DEFAULT_DISALLOWED_DIRECTIVES : f.disallowedHeaderDirectives;
  return {
    urlList: f.urlList,
    outputFolder: f.outputFolder,
    imageSize: f.imageSize,
    processesCount: f.processesCount,
    threadCount: f.threadCount,
    resizeMode: f.resizeMode as DownloadConfig['resizeMode'],
    resizeOnlyIfBigger: f.resizeOnlyIfBigger,
    upscaleInterpolation: f.upscaleInterpolation.toLowerCase(),
    downscaleInterpolation: f.downscaleInterpolation.toLowerCase(),
    encodeQuality: f.encodeQuality,
    encodeFormat: f.encodeFormat as DownloadConfig['encodeFormat'],
    skipReencode: f.skipReencode,
    outputFormat: outputFormat as DownloadConfig['outputFormat'],
    inputFormat: f.inputFormat as DownloadConfig['inputFormat'],
    urlCol: f.urlCol,
    captionCol: isNone(f.captionCol) ? null : f.captionCol,
    bboxCol,
    numberSamplePerShard: f.numberSamplePerShard,
    extractExif: f.extractExif,
    saveAdditionalColumns: extra,
    timeoutMs: Math.round(f.timeout * 1000),
    enableWandb: f.enableWandb,
    wandbProject: f.wandbProject,
    oomShardCount: f.oomShardCount,
    computeHash: computeHash as DownloadConfig['computeHash'],
    verifyHash,
    distributor: f.distributor as DownloadConfig['distributor'],
    retries: f.retries,
    disableAllReencoding: f.disableAllReencoding,
    minImageSize: f.minImageSize,
    maxImageArea: parseLimit(f.maxImageArea, 'max-image-area'),
    maxAspectRatio: parseLimit(f.maxAspectRatio, 'max-aspect-ratio'),
    incrementalMode: f.incrementalMode as DownloadConfig['incrementalMode'],
    maxShardRetry: f.maxShardRetry,
    userAgentToken: isNone(f.userAgentToken) ? null : f.userAgentToken,
    disallowedHeaderDirectives: [...new Set(directives.map((d) => d.trim().toLowerCase()))],
    allowPrivateAddresses: f.allowPrivateAddresses,
    maxImageBytes,
    maxImagePixels: f.maxImagePixels,
    perHostConnections: f.perHostConnections,
    resizeEngine: f.resizeEngine as DownloadConfig['resizeEngine'],
    redisUrl,
    queueName: f.queueName,
  };
}
