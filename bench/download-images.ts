// Benchmark, run by hand: download_images vs img2dataset 1.47 on the same input parquet, images
// served by nginx on loopback (so the server costs little CPU), same options:
//   --image_size 256 --resize_mode border --output_format webdataset
//   --processes_count <cores> --thread_count 64
// Prints img/s, CPU seconds per image and peak RSS of each process tree, and the ratios; then our
// peak RSS on a larger input to show it does not grow with the input.
//
//   apt-get install -y nginx-light
//   npx tsx bench/download-images.ts [--images 20000] [--rss-images 100000] [--distinct 1000]
//
// The first run renders --distinct images with the demo generator (320-1600 px photo-like JPEGs)
// and serves --images names cycling over them: decoding and resizing cost the same for a repeated
// file, and rendering 100,000 distinct images would take longer than the benchmark itself.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { writeImageCorpus } from '../demo/images.ts';
import { defineCli } from '../lib/cli.ts';
import { readTarSamples } from '../lib/webdataset/tar-reader.ts';
import { openDb, sqlString } from '../lib/parquet.ts';
import { startNginx } from './nginx.ts';
import { runMeasured, type TreeRun } from './process-tree.ts';

const cli = defineCli({
  command: 'npx tsx bench/download-images.ts',
  summary: 'download_images vs img2dataset 1.47 on images served by nginx on loopback.',
  flags: {
    images: { type: 'int', default: 20_000, help: 'Input rows for the head-to-head run' },
    'rss-images': { type: 'int', default: 100_000, help: 'Input rows for our memory-growth run (0 skips it)' },
    distinct: { type: 'int', default: 1000, help: 'Distinct images rendered and cycled over' },
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
const base = join(work, 'base');
const www = join(work, 'www');
const venv = resolve(flags.peerVenv);

async function distinctImages(): Promise<string[]> {
  await mkdir(base, { recursive: true });
  let names = (await readdir(base)).filter((n) => n.endsWith('.jpg'));
  if (names.length < flags.distinct) {
    process.stderr.write(`rendering ${flags.distinct} distinct images into ${base} (once) ...\n`);
    await writeImageCorpus(base, flags.distinct, { seed: 0, concurrency: 2 });
    names = (await readdir(base)).filter((n) => n.endsWith('.jpg'));
  }
  // A file cut short by an interrupted earlier render is left out.
  const ok: string[] = [];
  for (const n of names.sort((a, b) => parseInt(a) - parseInt(b)).slice(0, flags.distinct)) {
    try {
      await sharp(join(base, n)).stats();
      ok.push(n);
    } catch {
      await rm(join(base, n), { force: true });
    }
  }
  return ok;
}

async function servedTree(count: number, distinct: string[]): Promise<void> {
  const dir = join(www, 'img');
  const stamp = join(www, `.tree-${count}-${distinct.length}`);
  if (existsSync(stamp)) return;
  await rm(www, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < count; i++) await symlink(join(base, distinct[i % distinct.length]!), join(dir, `${i}.jpg`));
  await writeFile(stamp, '');
}

async function inputParquet(count: number, port: number): Promise<string> {
  const path = join(work, `input-${count}.parquet`);
  const db = await openDb();
  try {
    await db.run(
      `COPY (SELECT 'http://127.0.0.1:${port}/img/' || i || '.jpg' AS url, 'a photo number ' || i AS caption FROM range(${count}) t(i))
       TO ${sqlString(path)} (FORMAT parquet)`,
    );
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
  run: TreeRun;
}

async function runOurs(input: string, images: number): Promise<Row> {
  const out = join(work, `out-ours-${images}`);
  await rm(out, { recursive: true, force: true });
  const run = await runMeasured(process.execPath, ['--import', 'tsx', 'download_images/run.ts', ...commonArgs(input, out), '--allow_private_addresses', 'True', ...splitArgs(flags.oursArgs)]);
  if (run.code !== 0) process.stderr.write(run.stderrTail);
  return { name: 'download_images', images, ok: await successes(out), run };
}

async function runPeer(input: string, images: number): Promise<Row> {
  const out = join(work, `out-img2dataset-${images}`);
  await rm(out, { recursive: true, force: true });
  const run = await runMeasured(join(venv, 'bin', 'img2dataset'), commonArgs(input, out), { NO_ALBUMENTATIONS_UPDATE: '1' });
  if (run.code !== 0) process.stderr.write(run.stderrTail);
  return { name: 'img2dataset 1.47', images, ok: await successes(out), run };
}

function line(r: Row): string {
  return (
    `${r.name.padEnd(17)} ${String(r.images).padStart(7)} rows  ${String(r.ok).padStart(7)} ok  ` +
    `${(r.images / r.run.seconds).toFixed(1).padStart(7)} img/s  ${((1000 * r.run.cpuSeconds) / r.images).toFixed(2).padStart(6)} CPU ms/img  ` +
    `peak RSS ${r.run.peakTreeRssMb.toFixed(0).padStart(5)} MB  wall ${r.run.seconds.toFixed(1)} s  exit ${r.run.code}`
  );
}

const distinct = await distinctImages();
await servedTree(Math.max(flags.images, flags.rssImages), distinct);
const nginx = await startNginx({ root: www, workDir: work });
const port = nginx.port;
const rows: Row[] = [];
try {
  const input = await inputParquet(flags.images, port);
  const ours = await runOurs(input, flags.images);
  rows.push(ours);
  process.stdout.write(line(ours) + '\n');
  let peer: Row | undefined;
  if (!flags.skipPeer) {
    ensurePeer();
    peer = await runPeer(input, flags.images);
    rows.push(peer);
    process.stdout.write(line(peer) + '\n');
  }
  let big: Row | undefined;
  if (flags.rssImages > 0) {
    big = await runOurs(await inputParquet(flags.rssImages, port), flags.rssImages);
    process.stdout.write(line(big) + '\n');
  }
  const out = [
    '',
    `${distinct.length} distinct JPEGs (320-1600 px) behind ${Math.max(flags.images, flags.rssImages)} URLs, nginx on loopback, ${cpus().length} cores, --processes_count ${flags.processes} --thread_count ${flags.threadCount}`,
  ];
  if (peer) {
    const [a, b] = await Promise.all([imageHashes(join(work, `out-ours-${flags.images}`)), imageHashes(join(work, `out-img2dataset-${flags.images}`))]);
    let same = 0;
    for (const [key, h] of a) if (b.get(key) === h) same++;
    out.push(`images byte-identical to img2dataset's: ${same} of ${b.size} (--resize_engine exact gives all of them)`);
    out.push(
      `img/s ratio (ours / img2dataset):        ${(peer.run.seconds / ours.run.seconds).toFixed(2)}x   (target >= 2x)`,
      `CPU per image ratio (ours / img2dataset): ${(ours.run.cpuSeconds / peer.run.cpuSeconds).toFixed(2)}x   (target <= 0.5x)`,
      `peak RSS ratio (ours / img2dataset):      ${(ours.run.peakTreeRssMb / peer.run.peakTreeRssMb).toFixed(2)}x`,
    );
  }
  if (big) out.push(`our peak RSS at ${flags.rssImages} vs ${flags.images} rows: ${((100 * big.run.peakTreeRssMb) / ours.run.peakTreeRssMb - 100).toFixed(1)}%   (target within 10%)`);
  process.stdout.write(out.join('\n') + '\n');
} finally {
  nginx.stop();
}
