// Benchmark, run by hand: the same autoindex listing of N files x S MB, served by nginx on loopback,
// downloaded by download_csv/run.ts and by aria2c with the original pipeline's options
// (-x 16 -s 16 -j 100, per-file split=16, min-split-size=20M) in one run.
//
//   apt-get install -y nginx-light aria2
//   npx tsx bench/download-csv.ts [--files 200] [--file-mb 5] [--parallel 16]
//
// aria2c cannot crawl a listing, so it is handed the URL list (its crawl time is not counted, ours
// is): the ratio is conservative for us.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { defineCli } from '../lib/cli.ts';
import { Rng } from '../lib/random.ts';
import { startNginx } from './nginx.ts';

const cli = defineCli({
  command: 'npx tsx bench/download-csv.ts',
  summary: 'download_csv vs aria2c on an nginx autoindex listing served on loopback.',
  flags: {
    files: { type: 'int', default: 200, help: 'Files in the listing' },
    'file-mb': { type: 'float', default: 5, help: 'Size of each file in MB' },
    parallel: { type: 'int', default: 16, help: 'download_csv --parallel' },
    workdir: { type: 'string', default: '.bench/download-csv', help: 'Where the served tree and the outputs go' },
  },
});

const { flags } = cli.run();
const work = resolve(flags.workdir);
const www = join(work, 'www');
const fileBytes = Math.round(flags.fileMb * 1_000_000);

async function makeTree(): Promise<string[]> {
  const stamp = join(www, `.made-${flags.files}x${fileBytes}`);
  const paths: string[] = [];
  for (let i = 0; i < flags.files; i++) paths.push(`cah/2021081${i % 3}/job-${String(i % 20).padStart(3, '0')}/part-${String(i).padStart(5, '0')}.csv`);
  if (existsSync(stamp)) return paths;
  await rm(www, { recursive: true, force: true });
  const rng = new Rng(1);
  const line = (): string => `${rng.int(1e10, 9e10)}|http://example.com/${rng.int(0, 1e9)}.jpg|caption ${rng.int(0, 1e9)} words here|${rng.int(16, 1600)}|${rng.int(16, 1600)}|?|UNLIKELY|0.3${rng.int(0, 99999)}\n`;
  for (const p of paths) {
    const chunks: string[] = ['SAMPLE_ID|URL|TEXT|HEIGHT|WIDTH|LICENSE|NSFW|similarity\n'];
    let n = chunks[0]!.length;
    while (n < fileBytes) {
      const l = line();
      chunks.push(l);
      n += l.length;
    }
    await mkdir(join(www, p, '..'), { recursive: true });
    await writeFile(join(www, p), Buffer.from(chunks.join('')).subarray(0, fileBytes));
  }
  await writeFile(stamp, '');
  return paths;
}

interface Timed {
  seconds: number;
  cpuSeconds: number;
  maxRssMb: number;
  code: number | null;
}

/** Runs a command under /usr/bin/time for wall, CPU and peak RSS. */
function timed(cmd: string, args: string[]): Promise<Timed> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolvePromise) => {
    const child = spawn('/usr/bin/time', ['-f', 'TIME %U %S %M', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const m = /TIME ([\d.]+) ([\d.]+) (\d+)/.exec(err);
      if (code !== 0) process.stderr.write(err.slice(-2000));
      resolvePromise({ seconds, cpuSeconds: m ? Number(m[1]) + Number(m[2]) : NaN, maxRssMb: m ? Number(m[3]) / 1024 : NaN, code });
    });
  });
}

async function digestTree(dir: string, paths: string[]): Promise<string> {
  const h = createHash('sha256');
  for (const p of paths) h.update(await readFile(join(dir, p)));
  return h.digest('hex');
}

const paths = await makeTree();
const nginx = await startNginx({ root: www, workDir: work, workerProcesses: 2, autoindex: true });
const base = nginx.origin;
const totalMb = (paths.length * fileBytes) / 1e6;

try {
  const oursOut = join(work, 'out-ours');
  const ariaOut = join(work, 'out-aria2c');
  await rm(oursOut, { recursive: true, force: true });
  await rm(ariaOut, { recursive: true, force: true });

  const ours = await timed(process.execPath, [
    '--import', 'tsx', 'download_csv/run.ts', '--url', `${base}/cah/`, '--output-folder', oursOut,
    '--allow-private-addresses', '--parallel', String(flags.parallel),
  ]);

  // The aria2c input file the original to_aria.py wrote: URL, then per-URL options.
  const list = paths
    .map((p) => `${base}/${p}\n  dir=${join(ariaOut, p, '..').replace(`${ariaOut}/cah`, ariaOut)}\n  continue=true\n  max-connection-per-server=16\n  split=16\n  min-split-size=20M\n`)
    .join('\n');
  await writeFile(join(work, 'for_aria.txt'), list);
  const aria = await timed('aria2c', [
    `--dir=${ariaOut}`, '--auto-file-renaming=false', '--continue=true', '-x', '16', '-s', '16', '-j', '100',
    '-i', join(work, 'for_aria.txt'), '--console-log-level=warn', '--summary-interval=0', '--file-allocation=none',
  ]);

  const rel = paths.map((p) => p.replace(/^cah\//, ''));
  const same = (await digestTree(oursOut, rel)) === (await digestTree(ariaOut, rel)) && (await digestTree(www, paths)) === (await digestTree(oursOut, rel));
  const row = (name: string, t: Timed): string =>
    `${name.padEnd(14)} ${t.seconds.toFixed(2).padStart(7)} s  ${(totalMb / t.seconds).toFixed(0).padStart(5)} MB/s  cpu ${t.cpuSeconds.toFixed(2)} s  peak RSS ${t.maxRssMb.toFixed(0)} MB  exit ${t.code}`;
  process.stdout.write(
    [
      `${paths.length} files x ${flags.fileMb} MB = ${totalMb.toFixed(0)} MB, nginx autoindex on loopback, ${spawnSync('nproc').stdout.toString().trim()} cores`,
      row('download_csv', ours),
      row('aria2c', aria),
      `ratio (ours / aria2c wall time): ${(ours.seconds / aria.seconds).toFixed(2)}x   (target <= 1.0x)`,
      `outputs identical to the served files: ${same}`,
    ].join('\n') + '\n',
  );
} finally {
  nginx.stop();
}
