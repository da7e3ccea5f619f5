// Benchmark, run by hand: download_images vs img2dataset 1.47 on the same input parquet, images
// served by nginx on loopback (so the server costs little CPU), same options:
//   --image_size 256 --resize_mode border --output_format webdataset
//   --processes_count <cores> --thread_count 64
// Prints img/s, CPU seconds per image and peak RSS of each process tree, and the ratios, for each
// corpus; on laion-mix also per long-side band (< 256, 256-511, >= 512) and a 20-image start-up run
// of each tool, so the marginal cost per image is seen apart from start-up; then our peak RSS on a
// larger input to show it does not grow with the input.
//
//   apt-get install -y nginx-light
//   npx tsx bench/download-images.ts [--corpus laion-mix,generated] [--images 20000] [--rss-images 100000]
//
// Corpora: `laion-mix` (bench/laion-mix-corpus.ts: real photographs and artworks from Debian's
// wallpaper packages, cut and scaled into LAION-400M's size mix, in a web mix of encodings) and
// `generated` (the demo generator's 320-1600 px photo-like JPEGs). Each is rendered once with
// --distinct images, and --images URLs cycle over them: decoding and resizing cost the same for a
// repeated file, and rendering 100,000 distinct images would take longer than the benchmark.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { writeImageCorpus } from '../demo/images.ts';
import { laionMixCorpus } from './laion-mix-corpus.ts';
import { defineCli } from '../lib/cli.ts';
import { readTarSamples } from '../lib/webdataset/tar-reader.ts';
import { openDb, sqlString } from '../lib/parquet.ts';
import { startNginx } from './nginx.ts';
import { runMeasured, type TreeRun } from './process-tree.ts';

const cli = defineCli({
  command: 'npx tsx bench/download-images.ts',
  summary: 'download_images vs img2dataset 1.47 on images served by nginx on loopback.',
  flags: {
    corpus: { type: 'list', default: ['laion-mix', 'generated'], help: 'Corpora to run: laion-mix, generated' },
    images: { type: 'int', default: 20_000, help: 'Input rows for the head-to-head run' },
    'band-images': { type: 'int', default: 3000, help: 'Input rows per long-side band run on laion-mix (0 skips them)' },
    'startup-images': { type: 'int', default: 20, help: 'Input rows of the start-up run (0 skips it)' },
    'rss-images': { type: 'int', default: 100_000, help: 'Input rows for our memory-growth run (0 skips it)' },
    distinct: { type: 'int', default: 4000, help: 'Distinct images rendered per corpus and cycled over' },
    processes: { type: 'int', default: cpus().length, help: '--processes_count for both' },
    'thread-count': { type: 'int', default: 64, help: '--thread_count for both' },
    'skip-peer': { type: 'bool', default: false, help: 'Run only ours' },
    args: { type: 'string', default: '', help: "Extra options for both tools, e.g. '--resize_mode no'" },
    'ours-args': { type: 'string', default: '', help: "Extra options for ours only, e.g. '--resize_engine exact'" },
    'peer-venv': { type: 'string', default: '.bench/img2dataset-venv', help: 'Python venv with img2dataset==1.47.0 (created when missing)' },
    workdir: { type: 'string', default: '.bench/download-images', help: 'Images, inputs and outputs' },
  },
});

const { flags } = cli.run();
const work = resolve(flags.workdir);
const www = join(work, 'www');
const venv = resolve(flags.peerVenv);

interface Distinct {
  /** File name under the corpus folder. */
  name: string;
  longSide: number;
}

async function generatedImages(): Promise<Distinct[]> {
  const base = join(work, 'base');
  await mkdir(base, { recursive: true });
  let names = (await readdir(base)).filter((n) => n.endsWith('.jpg'));
  if (names.length < flags.distinct) {
    process.stderr.write(`rendering ${flags.distinct} distinct images into ${base} (once) ...\n`);
    await writeImageCorpus(base, flags.distinct, { seed: 0, concurrency: 2 });
    names = (await readdir(base)).filter((n) => n.endsWith('.jpg'));
  }
  // A file cut short by an interrupted earlier render is left out.
  const ok: Distinct[] = [];
  for (const n of names.sort((a, b) => parseInt(a) - parseInt(b)).slice(0, flags.distinct)) {
    try {
      const { width, height } = await sharp(join(base, n)).metadata();
      await sharp(join(base, n)).stats();
      ok.push({ name: n, longSide: Math.max(width!, height!) });
    } catch {
      await rm(join(base, n), { force: true });
    }
  }
  await linkCorpus('generated', base);
  return ok;
}

async function laionMixImages(): Promise<Distinct[]> {
  const dir = join(work, 'laion-mix');
  const metas = await laionMixCorpus(dir, join(work, 'laion-mix-debs'), flags.distinct);
  await linkCorpus('laion-mix', dir);
  return metas.map((m) => ({ name: m.name, longSide: Math.max(m.width, m.height) }));
}

/** A label as a file-name part: "laion-mix < 256" -> "laion-mix-lt-256". */
function slug(label: string): string {
  return label.replace(/>=/g, 'ge').replace(/</g, 'lt').replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

/** nginx serves www/<corpus>/ from the rendered folder. */
async function linkCorpus(corpus: string, dir: string): Promise<void> {
  await mkdir(www, { recursive: true });
  await rm(join(www, corpus), { recursive: true, force: true });
  await symlink(dir, join(www, corpus));
}

/** An input parquet of `count` URLs cycling over `images`; nginx maps /<corpus>/<i>/<name> to the file (see bench/nginx.ts). */
async function inputParquet(label: string, corpus: string, images: Distinct[], count: number, port: number): Promise<string> {
  const path = join(work, `input-${slug(label)}-${count}.parquet`);
  const listPath = `${path}.csv`;
  const lines = ['url,caption'];
  for (let i = 0; i < count; i++) lines.push(`http://127.0.0.1:${port}/${corpus}/${images[i % images.length]!.name}?n=${i},a photo number ${i}`);
  await writeFile(listPath, lines.join('\n') + '\n');
  const db = await openDb();
  try {
    await db.run(`COPY (SELECT * FROM read_csv(${sqlString(listPath)}, header = true, all_varchar = true)) TO ${sqlString(path)} (FORMAT parquet)`);
  } finally {
    db.close();
  }
  return path;
}

function ensurePeer(): void {
  if (existsSync(join(venv, 'bin', 'img2dataset'))) return;
  process.stderr.write(`installing img2dataset==1.47.0 into ${venv} ...\n`);
  const steps = [
    ['python3', ['-m', 'venv', venv]],
    [join(venv, 'bin', 'pip'), ['install', '-q', 'img2dataset==1.47.0']],
  ] as const;
  for (const [cmd, args] of steps) {
    const r = spawnSync(cmd, [...args], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`);
  }
}

/** Successful samples, from the per-shard stats files both tools write. */
async function successes(out: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(out)) {
    if (f.endsWith('_stats.json')) n += (JSON.parse(await readFile(join(out, f), 'utf8')) as { successes: number }).successes;
  }
  return n;
}

/** sha256 of each sample's .jpg, by key, from a webdataset output folder. */
async function imageHashes(out: string): Promise<Map<string, string>> {
  const hashes = new Map<string, string>();
  for (const f of (await readdir(out)).filter((n) => n.endsWith('.tar'))) {
    for await (const s of readTarSamples(join(out, f))) {
      const jpg = s.members.get('jpg');
      if (jpg) hashes.set(s.key, createHash('sha256').update(jpg).digest('hex'));
    }
  }
  return hashes;
}

function commonArgs(input: string, out: string): string[] {
  return [
    '--url_list', input, '--input_format', 'parquet', '--url_col', 'url', '--caption_col', 'caption',
    '--output_format', 'webdataset', '--output_folder', out, '--image_size', '256', '--resize_mode', 'border',
    '--processes_count', String(flags.processes), '--thread_count', String(flags.threadCount),
    ...splitArgs(flags.args),
  ];
}

const splitArgs = (s: string): string[] => s.split(/\s+/).filter(Boolean);

interface Row {
  name: string;
  images: number;
  ok: number;
  out: string;
  run: TreeRun;
}

async function runOurs(label: string, input: string, images: number): Promise<Row> {
  const out = join(work, `out-ours-${slug(label)}-${images}`);
  await rm(out, { recursive: true, force: true });
  const run = await runMeasured(process.execPath, ['--import', 'tsx', 'download_images/run.ts', ...commonArgs(input, out), '--allow_private_addresses', 'True', ...splitArgs(flags.oursArgs)]);
  if (run.code !== 0) process.stderr.write(run.stderrTail);
  return { name: 'download_images', images, ok: await successes(out), out, run };
}

async function runPeer(label: string, input: string, images: number): Promise<Row> {
  const out = join(work, `out-img2dataset-${slug(label)}-${images}`);
  await rm(out, { recursive: true, force: true });
  const run = await runMeasured(join(venv, 'bin', 'img2dataset'), commonArgs(input, out), { NO_ALBUMENTATIONS_UPDATE: '1' });
  if (run.code !== 0) process.stderr.write(run.stderrTail);
  return { name: 'img2dataset 1.47', images, ok: await successes(out), out, run };
}

function line(label: string, r: Row): string {
  return (
    `${label.padEnd(22)} ${r.name.padEnd(17)} ${String(r.images).padStart(7)} rows  ${String(r.ok).padStart(7)} ok  ` +
    `${(r.images / r.run.seconds).toFixed(1).padStart(7)} img/s  ${((1000 * r.run.cpuSeconds) / r.images).toFixed(2).padStart(6)} CPU ms/img  ` +
    `peak RSS ${r.run.peakTreeRssMb.toFixed(0).padStart(5)} MB  wall ${r.run.seconds.toFixed(1)} s  exit ${r.run.code}`
  );
}

function ratios(label: string, ours: Row, peer: Row): string {
  return (
    `${label.padEnd(22)} ratio (ours / img2dataset): img/s ${(peer.run.seconds / ours.run.seconds).toFixed(2)}x (target >= 2x), ` +
    `CPU per image ${(ours.run.cpuSeconds / peer.run.cpuSeconds).toFixed(2)}x (target <= 0.5x), peak RSS ${(ours.run.peakTreeRssMb / peer.run.peakTreeRssMb).toFixed(2)}x`
  );
}

/** Ours, then the peer, on one input; prints both lines and the ratios. */
async function headToHead(label: string, corpus: string, images: Distinct[], count: number, port: number): Promise<{ ours: Row; peer?: Row }> {
  const input = await inputParquet(label, corpus, images, count, port);
  const ours = await runOurs(label, input, count);
  process.stdout.write(line(label, ours) + '\n');
  if (flags.skipPeer) return { ours };
  ensurePeer();
  const peer = await runPeer(label, input, count);
  process.stdout.write(line(label, peer) + '\n' + ratios(label, ours, peer) + '\n');
  return { ours, peer };
}

const BANDS: Array<[string, (longSide: number) => boolean]> = [
  ['< 256', (l) => l < 256],
  ['256-511', (l) => l >= 256 && l < 512],
  ['>= 512', (l) => l >= 512],
];

const nginx = await startNginx({ root: www, workDir: work });
const port = nginx.port;
let firstWhole: Row | undefined;
try {
  for (const corpus of flags.corpus) {
    if (corpus !== 'laion-mix' && corpus !== 'generated') throw new Error(`--corpus: unknown corpus ${corpus} (laion-mix or generated)`);
    const images = corpus === 'laion-mix' ? await laionMixImages() : await generatedImages();
    const summary = [
      '',
      `${corpus}: ${images.length} distinct images behind the URLs, nginx on loopback, ${cpus().length} cores, --processes_count ${flags.processes} --thread_count ${flags.threadCount}`,
    ];
    let startup: { ours: Row; peer?: Row } | undefined;
    if (flags.startupImages > 0) startup = await headToHead(`${corpus} start-up`, corpus, images, flags.startupImages, port);
    const whole = await headToHead(`${corpus} whole`, corpus, images, flags.images, port);
    firstWhole ??= whole.ours;
    if (whole.peer) {
      const [a, b] = await Promise.all([imageHashes(whole.ours.out), imageHashes(whole.peer.out)]);
      let same = 0;
      for (const [key, h] of a) if (b.get(key) === h) same++;
      summary.push(`images byte-identical to img2dataset's: ${same} of ${b.size} (--resize_engine exact gives all of them)`);
    }
    const marginal = (r: Row, s: Row | undefined): string =>
      s ? `${((1000 * (r.run.cpuSeconds - s.run.cpuSeconds)) / (r.images - s.images)).toFixed(2)} CPU ms/img, ${((r.images - s.images) / (r.run.seconds - s.run.seconds)).toFixed(1)} img/s` : 'n/a';
    const rows: Array<[string, { ours: Row; peer?: Row }]> = [['whole', whole]];
    if (corpus === 'laion-mix' && flags.bandImages > 0) {
      for (const [band, inBand] of BANDS) {
        const subset = images.filter((im) => inBand(im.longSide));
        rows.push([band, await headToHead(`${corpus} ${band}`, corpus, subset, flags.bandImages, port)]);
      }
    }
    for (const [label, r] of rows) {
      let text = `${label.padEnd(8)} with start-up taken out: ours ${marginal(r.ours, startup?.ours)}`;
      if (r.peer) text += `; img2dataset ${marginal(r.peer, startup?.peer)}`;
      summary.push(text);
    }
    process.stdout.write(summary.join('\n') + '\n\n');
  }
  if (flags.rssImages > 0 && firstWhole) {
    // The first corpus again, on a larger input: our peak RSS must not grow with the input.
    const corpus = flags.corpus[0]!;
    const images = corpus === 'laion-mix' ? await laionMixImages() : await generatedImages();
    const small = firstWhole;
    const big = await runOurs('rss-big', await inputParquet('rss', corpus, images, flags.rssImages, port), flags.rssImages);
    process.stdout.write(line(`${corpus} rss`, big) + '\n');
    process.stdout.write(`our peak RSS at ${flags.rssImages} vs ${flags.images} rows: ${((100 * big.run.peakTreeRssMb) / small.run.peakTreeRssMb - 100).toFixed(1)}%   (target within 10%)\n`);
  }
} finally {
  nginx.stop();
}
