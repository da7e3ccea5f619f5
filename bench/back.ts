// `run.ts back` under load, by hand: an index of --vectors clustered 512-d vectors (built by
// `run.ts index`, memory-mappable) with url/caption/NSFW metadata, and a second index of as many
// 16-d vectors served with the tiny CLIP model for text queries; then --clients concurrent clients
// for --seconds each with embedding_input queries and with text queries, bodies as ClipClient
// sends them (num_images = num_result_ids = 40, deduplicate and safe mode on). Prints p50 / p99
// latency, queries/s and the server's RSS (VmRSS, VmHWM from /proc).
// With --clip-retrieval PYTHON, the same requests then go to clip-retrieval's own back end on the
// same index folders (bench/clip-retrieval-back.ts), and ours / theirs / ratio are printed.
//   npx tsx bench/back.ts [--vectors 1000000] [--clients 4] [--seconds 30] [--work-dir .bench/back]
//     [--clip-retrieval .bench/clip-retrieval-venv/bin/python]
// The data and indices are kept in --work-dir and reused by the next run (--rebuild to redo them).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Pool } from 'undici';
import { TINY_COLOURS, TINY_SHAPES, writeTinyClip } from '../demo/tiny-clip.ts';
import { defineCli, isMainModule } from '../lib/cli.ts';
import { log } from '../lib/log.ts';
import { NpyWriter } from '../lib/npy.ts';
import { openDb, sqlString } from '../lib/parquet.ts';
import { seededRandom } from '../lib/random.ts';
import { clusteredVectors } from '../test/helpers/clustered-vectors.ts';
import { startClipRetrievalBack } from './clip-retrieval-back.ts';

const cli = defineCli({
  command: 'npx tsx bench/back.ts',
  summary: 'Latency, throughput and memory of run.ts back under concurrent ClipClient-shaped queries.',
  flags: {
    vectors: { type: 'int', default: 1_000_000, help: 'Vectors in each index' },
    dim: { type: 'int', default: 512, help: 'Dimension of the embedding_input index' },
    clients: { type: 'int', default: 4, help: 'Concurrent clients' },
    seconds: { type: 'float', default: 30, help: 'Duration of each load phase' },
    'num-images': { type: 'int', default: 40, help: 'num_images = num_result_ids of each query' },
    deduplicate: { type: 'bool', default: true, help: 'deduplicate in each query' },
    'work-dir': { type: 'string', default: '.bench/back', help: 'Data, indices and model (kept between runs)' },
    rebuild: { type: 'bool', default: false, help: 'Regenerate data and indices' },
    'index-key': { type: 'string', default: null, help: 'Force the 512-d index\'s faiss key (e.g. IVF4096,PQ64x8) instead of run.ts index\'s choice' },
    'index-args': { type: 'string', default: '', help: 'More run.ts index options for the 512-d index, e.g. \'--max-index-query-time-ms 1.5\' (delete its index folder, or --rebuild, for them to apply)' },
    port: { type: 'int', default: 0, help: 'Port for back (0 = any)' },
    'clip-retrieval': { type: 'string', default: null, help: 'Python of a venv with pip clip-retrieval: also load its back end on the same indices (offline, stub model) and compare' },
  },
});

const CHUNK = 50_000;

async function writeDataset(dir: string, n: number, d: number, seed: number): Promise<void> {
  await mkdir(join(dir, 'img_emb'), { recursive: true });
  await mkdir(join(dir, 'metadata'), { recursive: true });
  const w = await NpyWriter.create(join(dir, 'img_emb', 'img_emb_0.npy'), 'float16', d);
  for (let done = 0; done < n; done += CHUNK) {
    const m = Math.min(CHUNK, n - done);
    // Each chunk has its own 1,000 cluster centres (CLIP embeddings are clustered).
    await w.append(clusteredVectors(m, d, { clusters: 1000, spread: 0.6, seed: seed * 1000 + done / CHUNK + 1 }));
  }
  await w.close();
  const db = await openDb();
  try {
    await db.run(
      `COPY (SELECT 'https://example.com/img/' || i || '.jpg' AS url, i::VARCHAR AS image_path, 'caption number ' || i AS caption, ` +
        `CASE WHEN i % 17 = 0 THEN 'NSFW' WHEN i % 5 = 0 THEN 'UNSURE' ELSE 'UNLIKELY' END AS "NSFW" FROM range(${n}) t(i)) ` +
        `TO ${sqlString(join(dir, 'metadata', 'metadata_0.parquet'))} (FORMAT parquet, ROW_GROUP_SIZE 100000)`,
    );
  } finally {
    db.close();
  }
}

function runStage(args: string[]): Promise<void> {
  log.info(`npx tsx embeddings-indices-hosting/run.ts ${args.join(' ')}`);
  return new Promise((res, rej) => {
    const c = spawn(process.execPath, ['--import', 'tsx', 'embeddings-indices-hosting/run.ts', ...args], { stdio: 'inherit' });
    c.on('close', (code) => (code === 0 ? res() : rej(new Error(`run.ts ${args[0]} exited with ${code}`))));
  });
}

/** VmRSS, its peak, and its file-backed part (RssFile: pages of memory-mapped files such as an
 * IVF index opened with mmap, page cache the kernel can drop; the rest is the process' own memory). */
function rssOf(pid: number): { rss: number; hwm: number; file: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), file: kb('RssFile') };
}

const mb = (b: number): string => `${(b / 1024 / 1024).toFixed(0)} MB`;

/**
 * --clients closed-loop clients on one keep-alive connection each (undici's Pool, lighter on the
 * shared cores than fetch); each body is serialised before its clock starts, so a latency is the
 * server's answer as the client sees it, without the client's own JSON work.
 */
async function load(url: string, clients: number, seconds: number, body: () => unknown): Promise<{ n: number; errors: number; p50: number; p99: number; qps: number }> {
  const lat: number[] = [];
  let errors = 0;
  const pool = new Pool(url, { connections: clients });
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  try {
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < end) {
          const json = JSON.stringify(body());
          const t = performance.now();
          const r = await pool.request({ path: '/knn-service', method: 'POST', body: json, headers: { 'content-type': 'application/json' } });
          await r.body.arrayBuffer();
          if (r.statusCode !== 200) errors++;
          else lat.push(performance.now() - t);
        }
      }),
    );
  } finally {
    await pool.close();
  }
  const wall = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
  return { n: lat.length, errors, p50: q(0.5), p99: q(0.99), qps: lat.length / wall };
}

async function main(): Promise<number> {
  const { flags } = cli.run();
  const work = resolve(flags.workDir);
  if (flags.rebuild) await rm(work, { recursive: true, force: true });
  const big = join(work, `emb-${flags.vectors}x${flags.dim}`);
  const tiny = join(work, `emb-${flags.vectors}x16`);
  const model = join(work, 'model');
  if (!existsSync(join(model, 'config.json'))) writeTinyClip(model);
  for (const [dir, d, seed] of [[big, flags.dim, 1], [tiny, 16, 2]] as const) {
    if (!existsSync(join(dir, 'index', 'image.index'))) {
      const t = performance.now();
      if (!existsSync(join(dir, 'metadata', 'metadata_0.parquet'))) {
        await rm(dir, { recursive: true, force: true });
        await writeDataset(dir, flags.vectors, d, seed);
        log.info(`wrote ${flags.vectors} x ${d} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      }
      const indexOptions = d !== flags.dim ? [] : [...(flags.indexKey ? ['--index-key', flags.indexKey] : []), ...flags.indexArgs.split(/\s+/).filter(Boolean)];
      await runStage(['index', '--embeddings-folder', dir, '--index-folder', join(dir, 'index'), '--should-be-memory-mappable', '--max-index-memory-usage', '2G', '--current-memory-available', '8G', ...indexOptions]);
    }
  }
  const paths = join(work, 'indices_paths.json');
  await writeFile(paths, JSON.stringify({ big: join(big, 'index'), tiny: { indice_folder: join(tiny, 'index'), clip_model: model } }));
  const setting = `${flags.vectors} vectors (${flags.dim}-d for embedding_input, 16-d + tiny CLIP for text), ${flags.clients} clients x ${flags.seconds} s, num_images ${flags.numImages}, deduplicate ${flags.deduplicate}, safe mode on`;
  const queries = clusteredVectors(1000, flags.dim, { clusters: 1000, spread: 0.6, seed: 1001 });
  // The same seeded request sequence for each server.
  const phases = (): Array<[string, () => unknown]> => {
    const rand = seededRandom(99);
    const common = { image: null, image_url: null, modality: 'image', num_images: flags.numImages, num_result_ids: flags.numImages, use_mclip: false, deduplicate: flags.deduplicate, use_safety_model: true, use_violence_detector: true, aesthetic_score: '9', aesthetic_weight: '0.5' };
    const colours = Object.keys(TINY_COLOURS);
    return [
      ['embedding_input', () => {
        const r = Math.floor(rand() * 1000);
        return { ...common, text: null, indice_name: 'big', embedding_input: Array.from(queries.subarray(r * flags.dim, (r + 1) * flags.dim)) };
      }],
      ['text', () => ({ ...common, text: `a ${colours[Math.floor(rand() * colours.length)]} ${TINY_SHAPES[Math.floor(rand() * 3)]}`, indice_name: 'tiny', embedding_input: null })],
    ];
  };
  const measure = async (label: string, url: string, pid: number): Promise<Measured> => {
    const atStart = rssOf(pid);
    log.info(`${label} ready at ${url}; RSS ${mb(atStart.rss)}`);
    const out: Measured = { atStart: atStart.rss, phases: new Map() };
    for (const [name, body] of phases()) {
      await load(url, flags.clients, Math.min(2, flags.seconds), body); // warm-up
      const r = await load(url, flags.clients, flags.seconds, body);
      const mem = rssOf(pid);
      out.phases.set(name, { ...r, rss: mem.rss, hwm: mem.hwm, file: mem.file });
      log.info(`${label} ${name.padEnd(16)} ${r.n} queries, ${r.errors} errors, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.qps.toFixed(0)} q/s; RSS ${mb(mem.rss)} (peak ${mb(mem.hwm)}; mapped files ${mb(mem.file)})`);
      log.info(await (await fetch(`${url}/metrics-summary`)).text());
    }
    return out;
  };
  const back = spawn(process.execPath, ['--import', 'tsx', 'embeddings-indices-hosting/run.ts', 'back', '--indices-paths', paths, '--port', String(flags.port), '--enable-faiss-memory-mapping'], { stdio: ['ignore', 'inherit', 'pipe'] });
  let ours: Measured;
  try {
    let err = '';
    const url = await new Promise<string>((res, rej) => {
      back.stderr!.on('data', (d: Buffer) => {
        process.stderr.write(d);
        err += d.toString();
        const m = /listening on (http:\/\/\S+?)\/? /.exec(err);
        if (m) res(m[1]!);
      });
      back.on('close', (code) => rej(new Error(`back exited with ${code}: ${err.slice(-2000)}`)));
    });
    ours = await measure('ours', url, back.pid!);
  } finally {
    await new Promise<void>((res) => {
      if (back.exitCode !== null || back.signalCode !== null) return res();
      back.once('close', () => res());
      back.kill('SIGTERM');
    });
  }
  log.info(`\n${setting}; back RSS at start ${mb(ours.atStart)}`);
  for (const [name, r] of ours.phases) log.info(phaseLine(name, r));
  if (flags.clipRetrieval) await comparePeer(flags.clipRetrieval, work, { big: join(big, 'index'), tiny: join(tiny, 'index') }, setting, ours, measure);
  return 0;
}

// ---- clip-retrieval's back end on the same indices (--clip-retrieval PYTHON).

interface PhaseResult {
  n: number;
  errors: number;
  p50: number;
  p99: number;
  qps: number;
  rss: number;
  hwm: number;
  /** RssFile after the phase. */
  file: number;
}

interface Measured {
  atStart: number;
  phases: Map<string, PhaseResult>;
}

function phaseLine(name: string, r: PhaseResult): string {
  return `${name.padEnd(16)} ${r.n} queries, ${r.errors} errors, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.qps.toFixed(0)} q/s; back RSS ${mb(r.rss)} (peak ${mb(r.hwm)}; mapped files ${mb(r.file)})`;
}

/** Starts clip-retrieval back on the same index folders, sends it the same phases, prints ours / theirs / ratio. */
async function comparePeer(
  python: string,
  work: string,
  indices: Record<string, string>,
  setting: string,
  ours: Measured,
  measure: (label: string, url: string, pid: number) => Promise<Measured>,
): Promise<void> {
  const peer = await startClipRetrievalBack({ python: resolve(python), work: join(work, 'clip-retrieval'), indices, textDim: 16 });
  let theirs: Measured;
  try {
    theirs = await measure('clip-retrieval', peer.url, peer.pid);
  } finally {
    await peer.stop();
  }
  const lines = [`\n${setting}`, `clip-retrieval back: ${peer.command}`, `${'figure'.padEnd(34)} ${'ours'.padStart(10)} ${'clip-retrieval'.padStart(14)}  ratio`];
  // ratio > 1 means ours is ahead: theirs / ours for times and memory, ours / theirs for queries/s.
  const row = (figure: string, o: number, t: number, unit: string, higherIsBetter: boolean, digits = 1): string =>
    `${figure.padEnd(34)} ${`${o.toFixed(digits)} ${unit}`.padStart(10)} ${`${t.toFixed(digits)} ${unit}`.padStart(14)}  ${(higherIsBetter ? o / t : t / o).toFixed(2)}x`;
  const MB = 1024 * 1024;
  lines.push(row('RSS at start', ours.atStart / MB, theirs.atStart / MB, 'MB', false, 0));
  for (const [name, o] of ours.phases) {
    const t = theirs.phases.get(name);
    if (!t) continue;
    lines.push(
      row(`${name} p50`, o.p50, t.p50, 'ms', false),
      row(`${name} p99`, o.p99, t.p99, 'ms', false),
      row(`${name} queries/s`, o.qps, t.qps, 'q/s', true, 0),
      row(`${name} RSS after`, o.rss / MB, t.rss / MB, 'MB', false, 0),
    );
    if (o.errors || t.errors) lines.push(`${name}: errors ours ${o.errors}, clip-retrieval ${t.errors}`);
  }
  lines.push('(ratio: how many times ours is ahead; < 1 = behind)');
  for (const l of lines) log.info(l);
}

if (isMainModule(import.meta.url)) process.exitCode = await main();
