// Benchmark, run by hand: `run.ts inference` (onnxruntime) vs open_clip in PyTorch, both on CPU, on
// the same images and captions with the same model: open_clip's ViT-B-32 with random weights
// (torch.manual_seed(0)), exported by bench/clip-inference.py to ONNX in our model-folder layout.
//
//   flock /tmp/bench.lock nice -n 5 npx tsx bench/clip-inference.ts [--samples 2000] [--batch-size 256]
//
// Images: the laion-mix corpus (bench/laion-mix-corpus.ts: real photographs from Debian's wallpaper
// packages in LAION-400M's size mix), resized as download_images writes them by default (border,
// 256 px, JPEG q95) into two webdataset tars; captions: the first --samples of the 10,000 real LAION
// captions in ../shared/data. The peer is what clip-retrieval runs with an open_clip model: a torch
// DataLoader whose workers read the tars and run open_clip's preprocess / tokenizer, the model on the
// main process (bench/clip-inference.py embed).
//
// Printed: images/s and captions/s of each (whole process: start-up, model load, reading, writing;
// and the tools' own loop time), the ratios, peak RSS of each process tree, the mean cosine between
// our embeddings and PyTorch's, and the decomposition of both gaps on the first
// --decompose-samples images: each preprocessing alone and each model alone (timed), our pixels fed
// to torch and torch's pixels fed to onnxruntime (cosines).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { byteSymbolsInVocabOrder } from '../demo/tiny-clip.ts';
import { createResizer, DEFAULT_RESIZER_OPTIONS } from '../download_images/resizer.ts';
import { locateModelFiles, normalizeRows, openImageTower, openTextTower, type ModelDtype } from '../embeddings-indices-hosting/inference/clip-model.ts';
import { ImagePreprocessor, readPreprocessorConfig } from '../embeddings-indices-hosting/inference/preprocess.ts';
import { ClipTokenizer } from '../embeddings-indices-hosting/inference/tokenizer.ts';
import { defineCli } from '../lib/cli.ts';
import { readNpy, writeNpy } from '../lib/npy.ts';
import { openDb, sqlString } from '../lib/parquet.ts';
import { readTarSamples } from '../lib/webdataset/tar-reader.ts';
import { TarWriter } from '../lib/webdataset/tar-writer.ts';
import { laionMixCorpus } from './laion-mix-corpus.ts';
import { treeRssKb } from './process-tree.ts';

const cores = cpus().length;
const cli = defineCli({
  command: 'flock /tmp/bench.lock nice -n 5 npx tsx bench/clip-inference.ts',
  summary: 'run.ts inference (onnxruntime) vs open_clip in PyTorch on CPU, same ViT-B-32 (random weights), same images and captions.',
  flags: {
    samples: { type: 'int', default: 2000, min: 2, help: 'Images and captions (two webdataset tars)' },
    'batch-size': { type: 'int', default: 256, min: 1, help: 'Batch size for both' },
    threads: { type: 'int', default: cores, min: 1, help: 'Intra-op threads for both (onnxruntime --intra-op-threads, torch.set_num_threads)' },
    'prepro-workers': { type: 'int', default: cores, min: 0, help: 'Our --num-prepro-workers and the peer\'s DataLoader workers' },
    'decompose-samples': { type: 'int', default: 256, min: 0, help: 'Images and captions of the decomposition (0 skips it)' },
    modalities: { type: 'list', default: ['image', 'text'], choices: ['image', 'text'], help: 'Timed runs: image (images/s), text (captions/s)' },
    'decompose-only': { type: 'bool', default: false, help: 'Skip the timed runs and the full-run cosines' },
    'skip-peer': { type: 'bool', default: false, help: 'Run only ours (the cosines then use the last peer embeddings, if any)' },
    dtype: { type: 'string', default: 'fp32', choices: ['fp32', 'int8'], help: 'Our model variant (run.ts inference --dtype); int8 is made from the export by onnxruntime\'s dynamic quantisation in the venv' },
    'ours-args': { type: 'string', default: '', help: "Extra options for run.ts inference, e.g. '--intra-op-threads 1'" },
    venv: { type: 'string', default: '.bench/torch-venv', help: 'Python venv with torch, open_clip_torch, onnx (created when missing)' },
    workdir: { type: 'string', default: '.bench/clip-inference', help: 'Corpus, tars, model folder and outputs' },
  },
});

const { flags } = cli.run();
const root = resolve(new URL('..', import.meta.url).pathname);
const work = resolve(flags.workdir);
const venv = resolve(flags.venv);
const python = join(venv, 'bin', 'python');
const helper = join(root, 'bench', 'clip-inference.py');
const sharedData = join(root, '..', 'shared', 'data');
const modelDir = join(work, 'model');
const tarsDir = join(work, `tars-${flags.samples}`);

function ensureVenv(): void {
  const check = spawnSync(python, ['-c', 'import torch, open_clip, onnx, onnxruntime'], { stdio: 'ignore' });
  if (check.status === 0) return;
  process.stderr.write(`installing torch (CPU wheels if download.pytorch.org answers, else PyPI's), open_clip_torch, onnx, onnxruntime into ${venv} ...\n`);
  if (!existsSync(python)) spawnOrDie('python3', ['-m', 'venv', venv]);
  const pip = join(venv, 'bin', 'pip');
  if (spawnSync(pip, ['install', '-q', 'torch', '--index-url', 'https://download.pytorch.org/whl/cpu'], { stdio: 'inherit', timeout: 120_000 }).status !== 0) {
    process.stderr.write('download.pytorch.org not reachable: PyPI\'s torch (CUDA build, runs on CPU; several GB)\n');
  }
  spawnOrDie(pip, ['install', '-q', 'torch', 'open_clip_torch', 'onnx', 'onnxruntime']);
}

function spawnOrDie(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.slice(0, 3).join(' ')} ... failed (exit ${r.status})`);
  return r.stdout.toString();
}

/** Two tars of --samples LAION-like samples: border-resized 256 px JPEGs, real LAION captions. */
async function prepareTars(): Promise<string[]> {
  const half = Math.ceil(flags.samples / 2);
  const names = ['00000.tar', '00001.tar'];
  if (existsSync(join(tarsDir, '.complete'))) return names.map((n) => join(tarsDir, n));
  const corpusDir = join(work, 'laion-mix');
  const metas = await laionMixCorpus(corpusDir, join(work, 'laion-mix-debs'), flags.samples);
  const captions = readFileSync(join(sharedData, 'img2dataset-tests', 'test_files', 'captions_10000.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => String(JSON.parse(l) ?? ''));
  if (captions.length < flags.samples) throw new Error(`only ${captions.length} captions in ../shared/data; pass --samples ${captions.length} or fewer`);
  process.stderr.write(`writing ${flags.samples} samples (border 256 px JPEG q95, as download_images' defaults) into ${tarsDir} ...\n`);
  await rm(tarsDir, { recursive: true, force: true });
  await mkdir(tarsDir, { recursive: true });
  const resize = createResizer(DEFAULT_RESIZER_OPTIONS);
  for (const [t, name] of names.entries()) {
    const tmp = join(tarsDir, `${name}.tmp`);
    const w = new TarWriter(createWriteStream(tmp));
    for (let i = t * half; i < Math.min(flags.samples, (t + 1) * half); i++) {
      const r = await resize(await readFile(join(corpusDir, metas[i]!.name)));
      if (r.error || !r.image) throw new Error(`${metas[i]!.name}: ${r.error}`);
      const key = String(t * 10000 + (i - t * half)).padStart(9, '0');
      const json = { url: `http://example.com/${metas[i]!.name}`, caption: captions[i], key, status: 'success', width: r.width, height: r.height, original_width: r.originalWidth, original_height: r.originalHeight };
      await w.writeSample({ key, members: { jpg: r.image, txt: captions[i]!, json: JSON.stringify(json) } });
    }
    await w.end();
    await rename(tmp, join(tarsDir, name));
  }
  await writeFile(join(tarsDir, '.complete'), '');
  return names.map((n) => join(tarsDir, n));
}

/** open_clip's export, plus vocab.json + merges.txt from CLIP's published merges (the HF files). */
async function prepareModel(): Promise<void> {
  if (!existsSync(join(modelDir, 'onnx', 'text_model.onnx'))) {
    process.stderr.write(`exporting open_clip ViT-B-32 (random weights) to ${modelDir} ...\n`);
    process.stderr.write(spawnOrDie(python, [helper, 'export', modelDir]));
  }
  if (flags.dtype === 'int8' && !existsSync(join(modelDir, 'onnx', 'text_model_int8.onnx'))) {
    process.stderr.write(`quantising the towers (int8) in ${modelDir} ...\n`);
    process.stderr.write(spawnOrDie(python, [helper, 'quantize', modelDir]));
  }
  if (!existsSync(join(modelDir, 'merges.txt'))) {
    const lines = gunzipSync(readFileSync(join(sharedData, 'clip-bpe', 'bpe_simple_vocab_16e6.txt.gz'))).toString('utf8').split('\n');
    const merges = lines.slice(1, 49152 - 256 - 2 + 1);
    const bytes = byteSymbolsInVocabOrder();
    const symbols = [...bytes, ...bytes.map((s) => `${s}</w>`), ...merges.map((m) => m.replace(' ', '')), '<|startoftext|>', '<|endoftext|>'];
    await writeFile(join(modelDir, 'vocab.json'), JSON.stringify(Object.fromEntries(symbols.map((s, i) => [s, i]))));
    await writeFile(join(modelDir, 'merges.txt'), `#version: 0.2\n${merges.join('\n')}\n`);
  }
}

interface TreeRun {
  code: number | null;
  seconds: number;
  cpuSeconds: number;
  /** Peaks over the process tree, MB: summed RSS, and summed PSS (shared pages split between the
   * processes that map them, so forked DataLoader workers do not count torch and the model twice). */
  peakRssMb: number;
  peakPssMb: number;
  stderrTail: string;
}

/** PSS of a process and its descendants, summed, in KB (/proc/PID/smaps_rollup). */
function treePssKb(root: number): number {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // ended while we looked
    }
  }
  let total = 0;
  for (const pid of parent.keys()) {
    for (let p: number | undefined = pid; p !== undefined && p > 1; p = parent.get(p)) {
      if (p !== root) continue;
      try {
        total += Number(/Pss:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
      } catch {
        // ended while we looked
      }
      break;
    }
  }
  return total;
}

/** Wall time, CPU seconds (GNU time) and peak RSS / PSS of a command's process tree. */
function runMeasured(cmd: string, args: string[]): Promise<TreeRun> {
  const t0 = performance.now();
  return new Promise((done) => {
    const child = spawn('/usr/bin/time', ['-f', 'CPUTIME %U %S', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-20_000);
    });
    let rss = 0;
    let pss = 0;
    const timer = setInterval(() => {
      if (!child.pid) return;
      rss = Math.max(rss, treeRssKb(child.pid));
      pss = Math.max(pss, treePssKb(child.pid));
    }, 1000); // reading /proc costs CPU the measured run would otherwise have
    child.on('close', (code) => {
      clearInterval(timer);
      const m = /CPUTIME ([\d.]+) ([\d.]+)/.exec(err);
      done({ code, seconds: (performance.now() - t0) / 1000, cpuSeconds: m ? Number(m[1]) + Number(m[2]) : NaN, peakRssMb: rss / 1024, peakPssMb: pss / 1024, stderrTail: err.slice(-3000) });
    });
  });
}

interface Timed {
  run: TreeRun;
  /** Samples per second over the whole process. */
  rate: number;
  /** Samples per second over the tool's own loop (after model load). */
  loopRate: number;
}

const load = (): string => loadavg().map((x) => x.toFixed(1)).join(' ');

async function runOurs(modality: 'image' | 'text'): Promise<Timed> {
  const out = join(work, `ours-${modality}`);
  await rm(out, { recursive: true, force: true });
  const args = [
    '--import', 'tsx', join(root, 'embeddings-indices-hosting', 'run.ts'), 'inference',
    '--input_dataset', tarsDir, '--input_format', 'webdataset', '--output_folder', out, '--clip_model', modelDir,
    '--enable_image', String(modality === 'image'), '--enable_text', String(modality === 'text'),
    '--batch_size', String(flags.batchSize), '--intra_op_threads', String(flags.threads),
    '--num_prepro_workers', String(Math.max(1, flags.preproWorkers)),
    '--dtype', flags.dtype,
    ...flags.oursArgs.split(/\s+/).filter(Boolean),
  ];
  const run = await runMeasured(process.execPath, args);
  if (run.code !== 0) throw new Error(`ours (${modality}) failed:\n${run.stderrTail}`);
  const m = /done: (\d+) samples .* ([\d.]+) s, [\d.]+ samples\/s/.exec(run.stderrTail);
  const n = m ? Number(m[1]) : NaN;
  if (n !== flags.samples) throw new Error(`ours (${modality}) embedded ${n} samples, expected ${flags.samples}:\n${run.stderrTail}`);
  return { run, rate: n / run.seconds, loopRate: n / Number(m![2]) };
}

async function runPeer(modality: 'image' | 'text', tars: string[]): Promise<Timed> {
  const prefix = join(work, `torch-${modality}`);
  const run = await runMeasured(python, [
    helper, 'embed', modelDir, modality, prefix, ...tars,
    '--batch-size', String(flags.batchSize), '--workers', String(flags.preproWorkers), '--threads', String(flags.threads),
  ]);
  if (run.code !== 0) throw new Error(`open_clip (${modality}) failed:\n${run.stderrTail}`);
  const m = /RESULT (\{.*\})/.exec(run.stderrTail);
  const r = JSON.parse(m![1]!) as { samples: number; loop_s: number };
  if (r.samples !== flags.samples) throw new Error(`open_clip (${modality}) embedded ${r.samples} samples, expected ${flags.samples}`);
  return { run, rate: r.samples / run.seconds, loopRate: r.samples / r.loop_s };
}

/** Row-wise cosine of two n x d matrices (rows need not be normalised); mean and minimum. */
function cosines(a: Float32Array, b: Float32Array, n: number, d: number): { mean: number; min: number } {
  let sum = 0;
  let min = Infinity;
  for (let r = 0; r < n; r++) {
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let j = 0; j < d; j++) {
      const x = a[r * d + j]!;
      const y = b[r * d + j]!;
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    const c = ab / Math.sqrt(aa * bb);
    sum += c;
    min = Math.min(min, c);
  }
  return { mean: sum / n, min };
}

/** Rows minus the column means of `ref` (the input-dependent part of each embedding). */
function centred(m: Float32Array, ref: Float32Array, n: number, d: number): Float32Array {
  const mean = new Float64Array(d);
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) mean[j]! += ref[r * d + j]! / n;
  return m.map((v, i) => v - mean[i % d]!);
}

/** Cosines of a against the reference rows, raw and with the reference's mean (normalised) embedding removed. */
function agreement(a: Float32Array, ref: Float32Array, n: number, d: number): string {
  const x = normalizeRows(a.slice(0, n * d), n, d);
  const y = normalizeRows(ref.slice(0, n * d), n, d);
  const raw = cosines(x, y, n, d);
  const c = cosines(centred(x, y, n, d), centred(y, y, n, d), n, d);
  return `${raw.mean.toFixed(6)} (min ${raw.min.toFixed(5)}; centred ${c.mean.toFixed(5)}, min ${c.min.toFixed(4)})`;
}

/** Sample keys in tar order: the order of our output rows (one partition, tars in order). */
async function tarKeys(tars: string[]): Promise<string[]> {
  const keys: string[] = [];
  for (const t of tars) for await (const s of readTarSamples(t)) keys.push(s.key.replace(/^.*\//, ''));
  return keys;
}

/** Embeddings of the full runs, ours reordered to the peer's key order. */
async function compareRuns(modality: 'image' | 'text', keys: string[]): Promise<string> {
  const prefix = modality === 'image' ? 'img_emb' : 'text_emb';
  const oursDir = join(work, `ours-${modality}`);
  const oursFile = (await readdir(join(oursDir, prefix))).filter((f) => f.endsWith('.npy'));
  if (oursFile.length !== 1) throw new Error(`expected one partition in ${oursDir}/${prefix}`);
  const ours = await readNpy(join(oursDir, prefix, oursFile[0]!));
  if (modality === 'image') {
    // The metadata names each row's sample: check the order assumed for the text run too.
    const db = await openDb();
    const paths = (await db.all<{ image_path: string }>(`SELECT image_path FROM read_parquet(${sqlString(join(oursDir, 'metadata', '*.parquet'))})`)).map((r) => r.image_path);
    db.close();
    if (paths.join() !== keys.join()) throw new Error(`our image rows are not in tar order (${paths.slice(0, 3).join()} ...)`);
  }
  const peerPath = join(work, `torch-${modality}.npy`);
  if (!existsSync(peerPath)) return `${modality}: no peer embeddings yet`;
  const peer = await readNpy(peerPath);
  const peerKeys = JSON.parse(await readFile(join(work, `torch-${modality}.keys.json`), 'utf8')) as string[];
  const row = new Map(keys.map((k, i) => [k, i]));
  const d = ours.cols;
  const n = peerKeys.length;
  if (n !== ours.rows || n !== keys.length) throw new Error(`${modality}: ${ours.rows} rows of ours, ${n} of the peer's, ${keys.length} samples`);
  const aligned = new Float32Array(n * d);
  peerKeys.forEach((k, i) => {
    const r = row.get(k);
    if (r === undefined) throw new Error(`key ${k} missing from our ${modality} output`);
    aligned.set(ours.data.subarray(r * d, (r + 1) * d), i * d);
  });
  const theirs = normalizeRows(peer.data, n, d);
  const same = cosines(aligned, theirs, n, d);
  // How discriminating the measure is: the cosine between different samples' torch embeddings, and
  // the agreement once the mean embedding (common to every input) is taken away.
  const other = cosines(theirs.subarray(0, (n - 1) * d), theirs.subarray(d), n - 1, d);
  const c = cosines(centred(aligned, theirs, n, d), centred(theirs, theirs, n, d), n, d);
  return `${modality}: mean cosine ours vs PyTorch ${same.mean.toFixed(5)} (min ${same.min.toFixed(4)}; target >= 0.995) over ${n}; ` +
    `after removing the mean embedding ${c.mean.toFixed(5)} (min ${c.min.toFixed(4)}); between different samples (torch) ${other.mean.toFixed(4)}`;
}

/** Each side's preprocessing and model alone, and the cross-fed cosines, on the first K samples. */
async function decompose(tars: string[]): Promise<string[]> {
  const k = Math.min(flags.decomposeSamples, flags.samples);
  const dir = join(work, 'decompose');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const files = locateModelFiles(modelDir, { image: true, text: true }, flags.dtype as ModelDtype);
  const prep = readPreprocessorConfig(files.preprocessorConfig);
  const side = prep.size;
  const floats = 3 * side * side;
  const pre = new ImagePreprocessor(prep);
  const jpgs: Buffer[] = [];
  const captions: string[] = [];
  for (const t of tars) {
    for await (const s of readTarSamples(t)) {
      jpgs.push(s.members.get('jpg')!);
      captions.push(s.members.get('txt')!.toString('utf8'));
    }
  }
  // Our preprocessing alone, all images, --prepro-workers at once (as the pipeline runs it).
  const pixels = new Float32Array(k * floats);
  const scratch = Array.from({ length: Math.max(1, flags.preproWorkers) }, () => new Float32Array(floats));
  let next = 0;
  let t = performance.now();
  await Promise.all(scratch.map(async (buf) => {
    for (let i = next++; i < jpgs.length; i = next++) {
      await pre.run(jpgs[i]!, buf);
      if (i < k) pixels.set(buf, i * floats);
    }
  }));
  const oursPreproMs = (performance.now() - t) / jpgs.length;
  await writeNpy(join(dir, 'our_pixels.npy'), 'float32', floats, pixels);
  const tokenizer = ClipTokenizer.fromModelFiles(files);
  t = performance.now();
  const tokens = tokenizer.encodeBatch(captions);
  const oursTokenizeMs = (performance.now() - t) / captions.length;

  process.stderr.write(`decomposition on ${k} samples (load ${load()}) ...\n`);
  const py = spawnSync(python, [helper, 'decompose', modelDir, dir, join(dir, 'our_pixels.npy'), String(k), ...tars, '--batch-size', String(flags.batchSize), '--threads', String(flags.threads)], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
  if (py.status !== 0) throw new Error(`decompose failed: ${py.stderr.toString().slice(-3000)}`);
  const r = JSON.parse(/RESULT (\{.*\})/.exec(py.stderr.toString())![1]!) as {
    prepro_s: number; model_s: [number, number]; tokenize_s: number; text_model_s: number;
    pixel_max_abs_diff: number; pixel_mean_abs_diff: number; pixel_share_differing: number; torch: string; open_clip: string; pillow: string;
  };

  const session = { device: 'cpu' as const, intraOpThreads: flags.threads };
  const image = await openImageTower(files.vision, side, session);
  const torchPixels = (await readNpy(join(dir, 'torch_pixels.npy'))).data;
  const runImage = async (px: Float32Array): Promise<{ emb: Float32Array; ms: number }> => {
    const emb = new Float32Array(k * image.dim);
    await image.run(px.subarray(0, Math.min(8, k) * floats), Math.min(8, k)); // warm-up, untimed
    const t0 = performance.now();
    for (let i = 0; i < k; i += flags.batchSize) {
      const n = Math.min(flags.batchSize, k - i);
      emb.set(await image.run(px.subarray(i * floats, (i + n) * floats), n), i * image.dim);
    }
    return { emb, ms: (performance.now() - t0) / k };
  };
  const ortTorchPx = await runImage(torchPixels);
  const ortOurPx = await runImage(pixels);
  const torchTorchPx = (await readNpy(join(dir, 'torch_on_torch_pixels.npy'))).data;
  const torchOurPx = (await readNpy(join(dir, 'torch_on_our_pixels.npy'))).data;
  const d = image.dim;
  const cRuntime = agreement(ortTorchPx.emb, torchTorchPx, k, d);
  const cPrepro = agreement(torchOurPx, torchTorchPx, k, d);
  const cBoth = agreement(ortOurPx.emb, torchTorchPx, k, d);

  const text = await openTextTower(files.text, session);
  const torchIds = (await readNpy(join(dir, 'torch_ids.npy'))).data;
  const L = 77;
  let sameIds = 0;
  const torchIdsBig = new BigInt64Array(k * L);
  for (let i = 0; i < k; i++) {
    let same = true;
    for (let j = 0; j < L; j++) {
      torchIdsBig[i * L + j] = BigInt(torchIds[i * L + j]!);
      if (torchIdsBig[i * L + j] !== tokens.ids[i * L + j]) same = false;
    }
    if (same) sameIds++;
  }
  const runText = async (ids: BigInt64Array): Promise<{ emb: Float32Array; ms: number }> => {
    const emb = new Float32Array(k * text.dim);
    const w = Math.min(8, k);
    await text.run(ids.subarray(0, w * L), tokens.mask.subarray(0, w * L), w); // warm-up, untimed
    const t0 = performance.now();
    for (let i = 0; i < k; i += flags.batchSize) {
      const n = Math.min(flags.batchSize, k - i);
      emb.set(await text.run(ids.subarray(i * L, (i + n) * L), tokens.mask.subarray(i * L, (i + n) * L), n), i * text.dim);
    }
    return { emb, ms: (performance.now() - t0) / k };
  };
  const ortTorchIds = await runText(torchIdsBig);
  const ortOurIds = await runText(tokens.ids.subarray(0, k * L));
  const torchText = (await readNpy(join(dir, 'torch_text.npy'))).data;
  const tRuntime = agreement(ortTorchIds.emb, torchText, k, text.dim);
  const tBoth = agreement(ortOurIds.emb, torchText, k, text.dim);

  const torchPreproMs = (r.prepro_s * 1000) / k;
  const torchModelMs = (r.model_s[0] * 1000) / k;
  const torchTextMs = (r.text_model_s * 1000) / k;
  const torchTokMs = (r.tokenize_s * 1000) / k;
  const f = (x: number): string => x.toFixed(2);
  return [
    `decomposition, first ${k} samples, batch ${flags.batchSize}, ${flags.threads} threads (torch ${r.torch}, open_clip ${r.open_clip}, Pillow ${r.pillow}; load ${load()}):`,
    `  image preprocessing alone, ms/image: ours ${f(oursPreproMs)} (native, ${flags.preproWorkers} at once, all ${jpgs.length} images), open_clip ${f(torchPreproMs)} (PIL + torchvision, one process)`,
    `  image model alone, ms/image:         onnxruntime ${f(ortTorchPx.ms)} (on torch's pixels; ${f(ortOurPx.ms)} on ours), PyTorch ${f(torchModelMs)} -> runtime ratio ${(torchModelMs / ortTorchPx.ms).toFixed(2)}x`,
    `  text tokenising alone, ms/caption:   ours ${f(oursTokenizeMs)} (all ${captions.length} captions), open_clip ${f(torchTokMs)}`,
    `  text model alone, ms/caption:        onnxruntime ${f(ortTorchIds.ms)} (on torch's ids; ${f(ortOurIds.ms)} on ours), PyTorch ${f(torchTextMs)} -> runtime ratio ${(torchTextMs / ortTorchIds.ms).toFixed(2)}x`,
    `  pixels, ours vs open_clip's: max |diff| ${r.pixel_max_abs_diff.toExponential(2)}, mean |diff| ${r.pixel_mean_abs_diff.toExponential(2)}, ${(100 * r.pixel_share_differing).toFixed(2)}% of values differ`,
    `  image cosine vs PyTorch on its own pixels: runtime only (onnxruntime on torch's pixels) ${cRuntime}; preprocessing only (PyTorch on our pixels) ${cPrepro}; both ${cBoth}`,
    `  text: ids equal to open_clip's for ${sameIds}/${k} captions; cosine runtime only (onnxruntime on torch's ids) ${tRuntime}; both (our ids) ${tBoth}`,
  ];
}

const mb = (x: number): string => `${Math.round(x)} MB`;

function line(who: string, modality: string, t: Timed): string {
  const unit = modality === 'image' ? 'images/s' : 'captions/s';
  return `${who.padEnd(9)} ${modality.padEnd(5)}: ${t.rate.toFixed(2)} ${unit} whole process (${t.run.seconds.toFixed(1)} s, CPU ${t.run.cpuSeconds.toFixed(0)} s), ` +
    `${t.loopRate.toFixed(2)} ${unit} in its loop, peak RSS ${mb(t.run.peakRssMb)} (PSS ${mb(t.run.peakPssMb)})`;
}

ensureVenv();
const tars = await prepareTars();
await prepareModel();
const torchVersion = spawnOrDie(python, ['-c', 'import torch, open_clip; print(torch.__version__, open_clip.__version__)']).trim();
process.stdout.write(
  `clip-inference: ${flags.samples} samples in ${tarsDir}, model ${modelDir} (open_clip ViT-B-32, random weights; torch / open_clip ${torchVersion}), ` +
    `ours --dtype ${flags.dtype}, batch ${flags.batchSize}, ${flags.threads} threads, ${flags.preproWorkers} prepro workers, ${cores} cores; load average at start ${load()}\n`,
);
const modalities = flags.decomposeOnly ? [] : (flags.modalities as Array<'image' | 'text'>);
for (const modality of modalities) {
  const ours = await runOurs(modality);
  process.stdout.write(`${line('ours', modality, ours)} (load ${load()})\n`);
  if (flags.skipPeer) continue;
  const peer = await runPeer(modality, tars);
  process.stdout.write(`${line('open_clip', modality, peer)} (load ${load()})\n`);
  const ratio = `${modality.padEnd(5)} ratio (ours / open_clip): ${(ours.rate / peer.rate).toFixed(2)}x whole process, ${(ours.loopRate / peer.loopRate).toFixed(2)}x in the loop` +
    `${modality === 'image' ? ' (target >= 1.5x)' : ''}; peak PSS ${(ours.run.peakPssMb / peer.run.peakPssMb).toFixed(2)}x`;
  process.stdout.write(ratio + '\n');
}
const keys = await tarKeys(tars);
for (const modality of modalities) process.stdout.write((await compareRuns(modality, keys)) + '\n');
if (flags.decomposeSamples > 0) for (const l of await decompose(tars)) process.stdout.write(l + '\n');
process.stdout.write(`load average at end ${load()}\n`);
