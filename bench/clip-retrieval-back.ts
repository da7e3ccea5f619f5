// clip-retrieval's own back end as bench/back.ts's peer: started from a Python that has the pip
// package `clip-retrieval` (a bench venv), on the very index folders `run.ts index` wrote (its
// contract: <folder>/image.index, <folder>/metadata/*.parquet), memory-mapped as ours serves them.
//
// Offline: clip-retrieval back loads a CLIP model at start even for embedding_input queries, and
// its models come from the hub, which the bench machine cannot reach. all_clip's `hf_clip:<folder>`
// loader reads a local Hugging Face CLIPModel folder, so bench/clip-retrieval-stub-model.py writes
// a random 1-layer CLIP with a 16-d projection (the text index's dimension) into the work folder.
// The assets it would also download (M-CLIP, aesthetic embeddings, safety and violence models) are
// switched off; with no safety model loaded its safe mode keeps every result (ours drops the rows
// the NSFW column marks), so its answers can be a little longer than ours.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { log } from '../lib/log.ts';

const STUB_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'clip-retrieval-stub-model.py');
const OFFLINE_ENV = { HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1', HF_DATASETS_OFFLINE: '1', PYTHONUNBUFFERED: '1' };

export interface PeerBack {
  url: string;
  pid: number;
  /** The command line it was started with, for the printed figures. */
  command: string;
  stop(): Promise<void>;
}

export interface PeerOptions {
  /** A python with clip_retrieval importable, e.g. .bench/clip-retrieval-venv/bin/python. */
  python: string;
  /** Where its indices_paths.json, stub model and working directory go. */
  work: string;
  /** Index name -> index folder (image.index + metadata/), in the order ours serves them. */
  indices: Record<string, string>;
  /** Dimension of the stub model's text embeddings (the text index's). */
  textDim: number;
  startTimeoutMs?: number;
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

function checkPython(python: string): void {
  const r = spawnSync(python, ['-c', 'import clip_retrieval.clip_back, all_clip'], { encoding: 'utf8', env: { ...process.env, ...OFFLINE_ENV } });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr.trim().split('\n').at(-1) ?? `exit ${r.status}`);
    throw new Error(
      `--clip-retrieval ${python}: cannot import clip_retrieval (${why}); make a venv: ` +
        `python3 -m venv .bench/clip-retrieval-venv && .bench/clip-retrieval-venv/bin/pip install clip-retrieval 'setuptools<81'`,
    );
  }
}

async function stubModel(python: string, dir: string, dim: number): Promise<void> {
  if (existsSync(join(dir, 'model.safetensors'))) return;
  log.info(`${python} ${STUB_SCRIPT} ${dir} --dim ${dim}`);
  const r = spawnSync(python, [STUB_SCRIPT, dir, '--dim', String(dim)], { encoding: 'utf8', env: { ...process.env, ...OFFLINE_ENV } });
  if (r.status !== 0) throw new Error(`writing the stub CLIP model for clip-retrieval failed: ${(r.stderr || r.error?.message || '').trim().split('\n').slice(-3).join(' | ')}`);
}

/** Polls /indices-list until it answers, the process exits, or the time is up. */
async function waitReady(url: string, child: ChildProcess, stderrTail: () => string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`clip-retrieval back exited (${child.exitCode ?? child.signalCode}) before answering: ${stderrTail()}`);
    }
    try {
      const r = await fetch(`${url}/indices-list`);
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`clip-retrieval back did not answer ${url}/indices-list within ${timeoutMs / 1000} s: ${stderrTail()}`);
}

export async function startClipRetrievalBack(o: PeerOptions): Promise<PeerBack> {
  checkPython(o.python);
  await mkdir(o.work, { recursive: true });
  const model = join(o.work, `stub-clip-${o.textDim}`);
  await stubModel(o.python, model, o.textDim);
  const paths = join(o.work, 'indices_paths.json');
  await writeFile(paths, JSON.stringify(Object.fromEntries(Object.entries(o.indices).map(([name, folder]) => [name, { indice_folder: folder }]))));
  const port = await freePort();
  const args = [
    '-m', 'clip_retrieval.cli', 'back',
    '--indices_paths', paths,
    '--port', String(port),
    '--enable_faiss_memory_mapping', 'True',
    '--clip_model', `hf_clip:${model}`,
    '--use_jit', 'False',
    '--enable_mclip_option', 'False',
    '--provide_aesthetic_embeddings', 'False',
    '--provide_safety_model', 'False',
    '--provide_violence_detector', 'False',
  ];
  const command = `${o.python} ${args.join(' ')}`;
  log.info(command);
  // cwd: an empty folder, so the relative image_path values ("123") never name a file it would
  // re-encode as base64 into the answer.
  const cwd = join(o.work, 'cwd');
  await mkdir(cwd, { recursive: true });
  const child = spawn(o.python, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...OFFLINE_ENV } });
  let tail = '';
  const keep = (d: Buffer): void => {
    tail = (tail + d.toString()).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  const stop = (): Promise<void> =>
    new Promise((res) => {
      if (child.exitCode !== null || child.signalCode !== null) return res();
      child.once('close', () => res());
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    });
  try {
    await waitReady(url, child, () => tail.trim().split('\n').slice(-5).join(' | '), o.startTimeoutMs ?? 300_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, pid: child.pid!, command, stop };
}
