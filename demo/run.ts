// `npm run demo`: every stage, in order, on the synthetic crawl served from this process. Stages
// chain only through files on disk, so each runs as its own CLI, exactly as a user would run it.
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { defineCli, isMainModule } from '../lib/cli.ts';
import { log } from '../lib/log.ts';
import { formatDuration } from '../lib/progress.ts';
import { startCrawlHost, type CrawlHost } from './crawl-host.ts';
import { faultsRoute } from './faults.ts';
import { imagesRoute } from './images.ts';

const cli = defineCli({
  command: 'npm run demo --',
  summary: 'Run the whole pipeline on the built-in synthetic crawl (a local host serving CSVs, images and faulty URLs).',
  flags: {
    'output-folder': { type: 'string', default: 'demo-output', help: 'Where every stage writes; emptied first' },
    serve: { type: 'bool', default: true, help: 'Keep serving at the end (--no-serve stops after the last stage)' },
    port: { type: 'int', default: 0, help: 'Port of the crawl host (0 = any free port)' },
    seed: { type: 'int', default: 0, help: 'Seed of the synthetic crawl' },
    files: { type: 'int', default: 12, help: 'CSV files in the crawl' },
    rows: { type: 'int', default: 200, help: 'Rows per CSV file' },
  },
});

function runStage(name: string, script: string, args: string[]): Promise<void> {
  log.info(`\n=== ${name}: npx tsx ${script} ${args.join(' ')}`);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { stdio: 'inherit' });
    child.on('close', (code) => (code === 0 ? resolvePromise() : reject(new Error(`${name} exited with ${code}; see its output above`))));
  });
}

/** Starts the demo crawl host with every route the pipeline's inputs point at. */
export async function startDemoHost(opts: { port?: number; seed?: number; files?: number; rows?: number } = {}): Promise<CrawlHost> {
  const host = await startCrawlHost({ port: opts.port, seed: opts.seed, files: opts.files, rowsPerFile: opts.rows, faultRate: 0.05 });
  const count = (n: number): void => void host.stats.bytesByPath.set('/images/', (host.stats.bytesByPath.get('/images/') ?? 0) + n);
  host.addRoute('/images/', imagesRoute({ seed: opts.seed, onBytes: count }));
  host.addRoute('/faults/', faultsRoute());
  return host;
}

async function main(): Promise<number> {
  const { flags } = cli.run();
  const started = Date.now();
  const out = resolve(flags.outputFolder);
  await rm(out, { recursive: true, force: true });
  const host = await startDemoHost({ port: flags.port, seed: flags.seed, files: flags.files, rows: flags.rows });
  log.info(`demo crawl host: ${host.crawlUrl}`);
  try {
    await runStage('1. download_csv', 'download_csv/run.ts', [
      '--url', host.crawlUrl, '--output-folder', `${out}/csv`, '--include', '*.csv,*.csv.gz', '--allow-private-addresses',
    ]);
    await runStage('2. deduplicate', 'deduplicate/run.ts', ['--input', `${out}/csv`, '--output-folder', `${out}/dedup`, '--parts', '2']);
    await runStage('2b. statistics', 'deduplicate/stats.ts', ['--input', `${out}/dedup`, '--output-folder', `${out}/stats`]);
    await runStage('3. download_images', 'download_images/run.ts', [
      '--url_list', `${out}/dedup`, '--input_format', 'parquet', '--url_col', 'URL', '--caption_col', 'TEXT',
      '--output_format', 'webdataset', '--output_folder', `${out}/images`, '--processes_count', '2', '--thread_count', '16',
      '--image_size', '256', '--number_sample_per_shard', '500', '--timeout', '10',
      '--save_additional_columns', '["NSFW","similarity","LICENSE"]', '--allow-private-addresses',
    ]);
  } catch (err) {
    log.error(String((err as Error).message));
    await host.close();
    return 1;
  }
  log.info(`\ndemo pipeline done in ${formatDuration((Date.now() - started) / 1000)}; outputs under ${out}/ (csv, dedup, stats, images)`);
  if (!flags.serve) {
    await host.close();
    return 0;
  }
  log.info(`serving the demo crawl at ${host.crawlUrl} (Ctrl-C to stop)`);
  await new Promise<void>((r) => process.once('SIGINT', () => r()));
  await host.close();
  return 0;
}

if (isMainModule(import.meta.url)) process.exitCode = await main();
