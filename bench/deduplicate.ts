// Stage 2 benchmark, by hand (not part of the tests): ours against the original pyspark method on
// the same generated crawl, in one run. Prints wall time, peak RSS and the ratio.
//
//   npx tsx bench/deduplicate.ts --rows 1000000 [--memory-limit 2GB] [--skip-spark]
//
// pyspark comes from a venv under .bench/ (git-ignored), made once with:
//   python3 -m venv .bench/venv && .bench/venv/bin/pip install pyspark==3.5.3
// Peak RSS is the sum over the command's process tree, sampled every 100 ms from /proc.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { defineCli } from '../lib/cli.ts';
import { formatBytes } from '../lib/progress.ts';
import { generateBenchCrawl } from './deduplicate/generate-csvs.ts';
import { treeRssKb } from './process-tree.ts';

const cli = defineCli({
  command: 'npx tsx bench/deduplicate.ts',
  summary: 'Benchmark deduplicate/run.ts against the original pyspark job on generated crawling@home CSVs.',
  flags: {
    rows: { type: 'int', default: 10_000_000, help: 'Rows of CSV to generate (about 30% exact duplicates, 5 column sets)' },
    'work-dir': { type: 'string', default: '.bench/dedup', help: 'Where the input and outputs go' },
    'memory-limit': { type: 'string', default: '2GB', help: 'Our --memory-limit' },
    threads: { type: 'int', default: 2, help: 'Our --threads; Spark runs local[threads]' },
    'skip-spark': { type: 'bool', default: false, help: 'Only run ours' },
    'spark-driver-memory': { type: 'string', default: '4g', help: 'spark.driver.memory' },
    python: { type: 'string', default: '.bench/venv/bin/python', help: 'Python with pyspark installed' },
  },
});

interface Timed {
  seconds: number;
  peakRssBytes: number;
  stdout: string;
  stderr: string;
}


/** Runs a command, sampling the RSS of its whole process tree (Spark's JVM is a grandchild). */
async function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Timed> {
  const started = Date.now();
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-20_000)));
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, treeRssKb(child.pid!) * 1024)), 100);
  const code = await new Promise<number | null>((r) => child.on('close', r));
  clearInterval(sampler);
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${code}): ${stderr.split('\n').slice(-15).join('\n')}`);
  return { seconds: (Date.now() - started) / 1000, peakRssBytes: peak, stdout, stderr };
}

const { flags } = cli.run();
const work = resolve(flags.workDir, `rows-${flags.rows}`);
const input = join(work, 'csv');
const marker = join(work, 'csv.done');
if (!existsSync(marker)) {
  await rm(input, { recursive: true, force: true });
  await mkdir(input, { recursive: true });
  const t = Date.now();
  const crawl = await generateBenchCrawl({ root: input, rows: flags.rows });
  await writeFile(marker, JSON.stringify(crawl));
  console.log(`generated ${crawl.rows} rows in ${crawl.files} files (${formatBytes(crawl.bytes)} of CSV) in ${((Date.now() - t) / 1000).toFixed(1)}s`);
} else console.log(`reusing ${input}: ${readFileSync(marker, 'utf8')}`);

const oursOut = join(work, 'ours');
const ours = await timed(process.execPath, [
  '--import', 'tsx', 'deduplicate/run.ts', '--input', input, '--output-folder', oursOut,
  '--memory-limit', flags.memoryLimit, '--threads', String(flags.threads),
]);
const summary = JSON.parse(readFileSync(join(oursOut, '_summary.json'), 'utf8')) as { rows_unique: number; rows_read: number };
console.log(`ours:    ${ours.seconds.toFixed(1)} s, peak RSS ${formatBytes(ours.peakRssBytes)}, ${summary.rows_unique} unique of ${summary.rows_read} rows read`);
const phases = ours.stderr.split('\n').find((l) => l.startsWith('time per phase: '));
if (phases) console.log(`         ${phases}`);

if (!flags.skipSpark) {
  const sparkOut = join(work, 'spark');
  await rm(sparkOut, { recursive: true, force: true });
  const spark = await timed(flags.python, ['bench/deduplicate/original_spark.py', input, sparkOut, String(flags.threads)], {
    ...process.env,
    SPARK_DRIVER_MEMORY: flags.sparkDriverMemory,
    PYSPARK_PYTHON: resolve(flags.python),
  });
  const s = JSON.parse(spark.stdout.trim().split('\n').pop()!) as { rows_before: number; rows_unique: number };
  console.log(`pyspark: ${spark.seconds.toFixed(1)} s, peak RSS ${formatBytes(spark.peakRssBytes)}, ${s.rows_unique} unique of ${s.rows_before} rows (Spark's dialect splits quoted rows)`);
  console.log(`speed-up: ${(spark.seconds / ours.seconds).toFixed(1)}x; RSS ratio ours/pyspark ${(ours.peakRssBytes / spark.peakRssBytes).toFixed(2)}`);
}
