// The CLIP model folder (Hugging Face / Transformers.js ONNX layout, contracts.md section 4) opened
// as two onnxruntime sessions. Everything the folder promises is checked at load, each failure a
// one-line error naming the file and what is wrong, so a bad export fails before any data is read.
// The execution provider is what the user asked for or an error: never a silent fall-back to CPU
// (clip-retrieval issue #390: users ran for days at 7 samples/s on CPU without knowing).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';

export const CONTEXT_LENGTH = 77;

export class ModelFolderError extends Error {}

export type Device = 'cpu' | 'cuda' | 'tensorrt' | 'webgpu';
export const DEVICES: readonly Device[] = ['cpu', 'cuda', 'tensorrt', 'webgpu'];

/**
 * The model variants of the Transformers.js v3 layout (its `dtype` option): each is a file beside
 * the full-precision one, `onnx/vision_model{suffix}.onnx`. Quantised variants trade a little
 * accuracy for speed on CPU (measured in the README); fp32 is the default and the drop-in choice.
 */
export const MODEL_DTYPES = ['fp32', 'fp16', 'q8', 'int8', 'uint8', 'q4', 'q4f16', 'bnb4'] as const;
export type ModelDtype = (typeof MODEL_DTYPES)[number];
const DTYPE_SUFFIX: Record<ModelDtype, string> = { fp32: '', fp16: '_fp16', q8: '_quantized', int8: '_int8', uint8: '_uint8', q4: '_q4', q4f16: '_q4f16', bnb4: '_bnb4' };

type TowerFile = 'vision_model' | 'text_model';

/** `onnx/{tower}{suffix}.onnx` in dir for a dtype. */
function towerPath(dir: string, tower: TowerFile, dtype: ModelDtype): string {
  return join(dir, 'onnx', `${tower}${DTYPE_SUFFIX[dtype]}.onnx`);
}

/** The dtypes whose file for `tower` the folder has, for error messages. */
function dtypesPresent(dir: string, tower: TowerFile): ModelDtype[] {
  return MODEL_DTYPES.filter((d) => existsSync(towerPath(dir, tower, d)));
}

export interface ModelFiles {
  dir: string;
  dtype: ModelDtype;
  vision: string;
  text: string;
  preprocessorConfig: string;
  config: string;
  /** tokenizer.json, or null when vocab.json + merges.txt stand in for it. */
  tokenizerJson: string | null;
  vocabJson: string | null;
  mergesTxt: string | null;
}

/** The folder's files, checked for presence only of what the run needs. */
export function locateModelFiles(dir: string, need: { image: boolean; text: boolean }, dtype: ModelDtype = 'fp32'): ModelFiles {
  if (!existsSync(dir)) throw new ModelFolderError(`model folder ${dir} does not exist; pass --clip-model DIR (an ONNX export in the Hugging Face layout, see the README)`);
  const f = (...p: string[]): string => join(dir, ...p);
  const files: ModelFiles = {
    dir,
    dtype,
    vision: towerPath(dir, 'vision_model', dtype),
    text: towerPath(dir, 'text_model', dtype),
    preprocessorConfig: f('preprocessor_config.json'),
    config: f('config.json'),
    tokenizerJson: existsSync(f('tokenizer.json')) ? f('tokenizer.json') : null,
    vocabJson: existsSync(f('vocab.json')) ? f('vocab.json') : null,
    mergesTxt: existsSync(f('merges.txt')) ? f('merges.txt') : null,
  };
  const missing = (p: string, what: string): never => {
    throw new ModelFolderError(`${p} is missing (${what}); the model folder needs the layout in the README`);
  };
  const missingTower = (p: string, tower: TowerFile, what: string): never => {
    const present = dtypesPresent(dir, tower);
    if (present.length === 0) missing(p, `${what}${dtype === 'fp32' ? '' : `, --dtype ${dtype}`}`);
    throw new ModelFolderError(`${p} is missing (${what}, --dtype ${dtype}); this folder has --dtype ${present.join(', ')} (see the README, "Quantised models")`);
  };
  if (!existsSync(files.config)) missing(files.config, 'the model config');
  if (need.image) {
    if (!existsSync(files.vision)) missingTower(files.vision, 'vision_model', 'the image tower, needed with --enable-image');
    if (!existsSync(files.preprocessorConfig)) missing(files.preprocessorConfig, 'image preprocessing settings, needed with --enable-image');
  }
  if (need.text) {
    if (!existsSync(files.text)) missingTower(files.text, 'text_model', 'the text tower, needed with --enable-text');
    if (!files.tokenizerJson && !(files.vocabJson && files.mergesTxt)) {
      missing(f('tokenizer.json'), 'the tokenizer: tokenizer.json, or vocab.json + merges.txt, needed with --enable-text');
    }
  }
  return files;
}

export function readJsonFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ModelFolderError(`${path} cannot be read: ${(err as Error).message}`);
  }
  try {
    const v: unknown = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new ModelFolderError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}

export interface SessionOptions {
  device: Device;
  /** Threads per operator (onnxruntime intra-op); 0 = onnxruntime's default (all cores). */
  intraOpThreads: number;
  /** Rows per onnxruntime run: a batch goes through the model in runs of at most this many;
   * 0 = the whole batch in one run. Default: defaultRowsPerRun(device). */
  rowsPerRun?: number;
}

/**
 * On CPU a batch runs faster in small runs: ViT-B/32 on 2 cores took 54.5 ms per image in runs of
 * 256, 52.7 at 128, 48.2 at 64, 44.9 at 16; its text tower 39.6 ms per caption at 256 and 34.6 at
 * 16 (likely because a small run's activations stay in cache from one operator to the next). A GPU wants the whole batch.
 */
export function defaultRowsPerRun(device: Device): number {
  return device === 'cpu' ? 16 : 0;
}

/** Runs `runRows(start, count)` over n rows in runs of at most `rowsPerRun` (0: one run), each
 * returning count x dim values, and gathers them into one n x dim array. */
async function inRuns(n: number, rowsPerRun: number, runRows: (start: number, count: number) => Promise<Float32Array>): Promise<Float32Array> {
  if (rowsPerRun <= 0 || n <= rowsPerRun) return runRows(0, n);
  let out: Float32Array | null = null;
  for (let start = 0; start < n; start += rowsPerRun) {
    const count = Math.min(rowsPerRun, n - start);
    const part = await runRows(start, count);
    const dim = part.length / count;
    out ??= new Float32Array(n * dim);
    out.set(part, start * dim);
  }
  return out!;
}

function providersFor(device: Device): ort.InferenceSession.ExecutionProviderConfig[] {
  // onnxruntime always adds CPU for operators the chosen provider lacks: only naming CPU here is
  // what a silent fall-back would be, and session creation fails instead when cuda cannot load.
  return [device];
}

async function openSession(path: string, opts: SessionOptions): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(path, {
      executionProviders: providersFor(opts.device),
      intraOpNumThreads: opts.intraOpThreads > 0 ? opts.intraOpThreads : undefined,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
    });
  } catch (err) {
    const msg = ((err as Error).message ?? String(err)).replace(/\s*\n\s*/g, ' ');
    if (opts.device !== 'cpu') {
      const backends = ort.listSupportedBackends().map((b) => `${b.name}${b.bundled ? '' : ' (needs its provider libraries installed)'}`).join(', ');
      throw new ModelFolderError(
        `--device ${opts.device}: onnxruntime could not start that execution provider for ${path} (${msg}); ` +
          `this onnxruntime-node offers ${backends}. See the README ("Running on CUDA"), or pass --device cpu`,
      );
    }
    throw new ModelFolderError(`${path} is not a model onnxruntime can load: ${msg}`);
  }
}

type TensorMeta = { name: string; type: string; shape: readonly (number | string)[] };

function tensorMeta(list: readonly ort.InferenceSession.ValueMetadata[], name: string): TensorMeta | null {
  const m = list.find((v) => v.name === name);
  if (!m || !m.isTensor) return null;
  return { name: m.name, type: m.type, shape: m.shape };
}

/** A fixed dimension that is not `want` is an error; symbolic dimensions (batch_size) pass. */
function checkShape(path: string, m: TensorMeta, want: (number | null)[], wantType: string): void {
  if (m.type !== wantType) throw new ModelFolderError(`${path}: ${m.name} has type ${m.type}, expected ${wantType}; use a model (or --dtype variant) with ${wantType} inputs and outputs`);
  const bad = m.shape.length !== want.length || want.some((w, i) => w !== null && typeof m.shape[i] === 'number' && m.shape[i] !== w);
  if (bad) {
    const shown = (s: readonly (number | string | null)[]): string => `[${s.map((d) => d ?? 'N').join(',')}]`;
    throw new ModelFolderError(`${path}: ${m.name} has shape ${shown(m.shape)}, expected ${shown(want)}`);
  }
}

function requireName(path: string, list: readonly string[], name: string, kind: 'input' | 'output'): void {
  if (!list.includes(name)) {
    throw new ModelFolderError(`${path}: no ${kind} named ${name} (it has ${list.join(', ') || 'none'}); the layout needs ${name}`);
  }
}

export interface ImageTower {
  size: number;
  dim: number;
  /** pixels: n x 3 x size x size float32, CHW per image. Returns n x dim (not normalised). */
  run(pixels: Float32Array, n: number): Promise<Float32Array>;
}

export interface TextTower {
  dim: number;
  /** Whether the model takes an attention_mask input (fed only then). */
  takesAttentionMask: boolean;
  /** ids: n x 77 int64. Returns n x dim (not normalised). */
  run(ids: BigInt64Array, mask: BigInt64Array | null, n: number): Promise<Float32Array>;
}

function outputDim(path: string, m: TensorMeta): number | null {
  checkShape(path, m, [null, null], 'float32');
  const d = m.shape[1];
  return typeof d === 'number' ? d : null;
}

export async function openImageTower(path: string, crop: number, opts: SessionOptions): Promise<ImageTower> {
  const session = await openSession(path, opts);
  const rowsPerRun = opts.rowsPerRun ?? defaultRowsPerRun(opts.device);
  requireName(path, session.inputNames, 'pixel_values', 'input');
  requireName(path, session.outputNames, 'image_embeds', 'output');
  const input = tensorMeta(session.inputMetadata, 'pixel_values')!;
  checkShape(path, input, [null, 3, crop, crop], 'float32');
  const extra = session.inputNames.filter((n) => n !== 'pixel_values');
  if (extra.length) throw new ModelFolderError(`${path}: unexpected inputs ${extra.join(', ')}; the image tower takes pixel_values only`);
  let dim = outputDim(path, tensorMeta(session.outputMetadata, 'image_embeds')!);
  const tower: ImageTower = {
    size: crop,
    dim: dim ?? 0,
    run(pixels, n) {
      const floats = 3 * crop * crop;
      return inRuns(n, rowsPerRun, async (start, count) => {
        const out = await session.run({ pixel_values: new ort.Tensor('float32', pixels.subarray(start * floats, (start + count) * floats), [count, 3, crop, crop]) }, ['image_embeds']);
        const t = out.image_embeds!;
        if (t.dims.length !== 2 || t.dims[0] !== count) throw new ModelFolderError(`${path}: image_embeds came back with shape [${t.dims.join(',')}], expected [${count},D]`);
        return t.data as Float32Array;
      });
    },
  };
  if (dim === null) {
    // Symbolic output width: learn it from one image.
    dim = (await tower.run(new Float32Array(3 * crop * crop), 1)).length;
    tower.dim = dim;
  }
  return tower;
}

export async function openTextTower(path: string, opts: SessionOptions): Promise<TextTower> {
  const session = await openSession(path, opts);
  const rowsPerRun = opts.rowsPerRun ?? defaultRowsPerRun(opts.device);
  requireName(path, session.inputNames, 'input_ids', 'input');
  requireName(path, session.outputNames, 'text_embeds', 'output');
  checkShape(path, tensorMeta(session.inputMetadata, 'input_ids')!, [null, CONTEXT_LENGTH], 'int64');
  const takesAttentionMask = session.inputNames.includes('attention_mask');
  if (takesAttentionMask) checkShape(path, tensorMeta(session.inputMetadata, 'attention_mask')!, [null, CONTEXT_LENGTH], 'int64');
  const extra = session.inputNames.filter((n) => n !== 'input_ids' && n !== 'attention_mask');
  if (extra.length) throw new ModelFolderError(`${path}: unexpected inputs ${extra.join(', ')}; the text tower takes input_ids and optionally attention_mask`);
  let dim = outputDim(path, tensorMeta(session.outputMetadata, 'text_embeds')!);
  const tower: TextTower = {
    dim: dim ?? 0,
    takesAttentionMask,
    async run(ids, mask, n) {
      if (takesAttentionMask && !mask) throw new Error('the text model takes attention_mask: pass one');
      return inRuns(n, rowsPerRun, async (start, count) => {
        const rows = (a: BigInt64Array) => a.subarray(start * CONTEXT_LENGTH, (start + count) * CONTEXT_LENGTH);
        const feeds: Record<string, ort.Tensor> = { input_ids: new ort.Tensor('int64', rows(ids), [count, CONTEXT_LENGTH]) };
        if (takesAttentionMask) feeds.attention_mask = new ort.Tensor('int64', rows(mask!), [count, CONTEXT_LENGTH]);
        const out = await session.run(feeds, ['text_embeds']);
        const t = out.text_embeds!;
        if (t.dims.length !== 2 || t.dims[0] !== count) throw new ModelFolderError(`${path}: text_embeds came back with shape [${t.dims.join(',')}], expected [${count},D]`);
        return t.data as Float32Array;
      });
    },
  };
  if (dim === null) {
    const ids = new BigInt64Array(CONTEXT_LENGTH);
    dim = (await tower.run(ids, takesAttentionMask ? new BigInt64Array(CONTEXT_LENGTH) : null, 1)).length;
    tower.dim = dim;
  }
  return tower;
}

/** Divides each row of an n x dim matrix by its L2 norm in place (a zero row stays zero). */
export function normalizeRows(m: Float32Array, n: number, dim: number): Float32Array {
  for (let r = 0; r < n; r++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += m[r * dim + j]! * m[r * dim + j]!;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < dim; j++) m[r * dim + j] = m[r * dim + j]! * inv;
  }
  return m;
}

/** Which execution providers this onnxruntime-node build can name, for --help and errors. */
export function availableBackends(): string {
  return ort.listSupportedBackends().map((b) => b.name).join(', ');
}
