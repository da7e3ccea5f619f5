// Statistics of a stage-2 output (or the published laion400m-meta parts): stats.json, stats.md and
// plots (SVG + PNG) in the output folder.
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic-file.ts';
import { defineCli, isMainModule } from '../lib/cli.ts';
import { errorMessage, log } from '../lib/log.ts';
import { openDb } from '../lib/parquet.ts';
import { Progress } from '../lib/progress.ts';
import { parquetSource } from './parquet-input.ts';
import { checkDbFlags } from './settings.ts';
import { renderPlots } from './plots.ts';
import { computeStats, statsMarkdown } from './statistics.ts';

export const statsCli = defineCli({
  command: 'npx tsx deduplicate/stats.ts',
  summary: 'Statistics of deduplicated parquet parts: stats.json, stats.md and histogram plots.',
  flags: {
    input: { type: 'string', required: true, help: 'Folder of *.parquet parts, one parquet file, or a glob' },
    'output-folder': { type: 'string', required: true, help: 'Where stats.json, stats.md and the plots go' },
    'memory-limit': { type: 'string', default: '4GB', help: "DuckDB's memory limit (it spills to OUTPUT/_tmp beyond it)" },
    threads: { type: 'int', default: availableParallelism(), help: 'DuckDB threads' },
  },
});

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const { flags } = statsCli.run(argv);
  const started = Date.now();
  try {
    await checkDbFlags(flags);
  } catch (err) {
    log.error(errorMessage(err));
    return 2;
  }
  let db;
  try {
    const source = await parquetSource(flags.input);
    db = await openDb({ memoryLimit: flags.memoryLimit, threads: flags.threads, tempDirectory: join(flags.outputFolder, '_tmp') });
    const progress = new Progress({ label: 'stats', total: 2, unit: 'steps' });
    const stats = await computeStats(db, source.sql);
    progress.item(true);
    const plots = await renderPlots(stats);
    progress.item(true);
    progress.stop();
    await writeFileAtomic(join(flags.outputFolder, 'stats.json'), JSON.stringify(stats, null, 2) + '\n');
    await writeFileAtomic(join(flags.outputFolder, 'stats.md'), statsMarkdown(stats, source.description));
    for (const p of plots) {
      await writeFileAtomic(join(flags.outputFolder, `${p.name}.svg`), p.svg);
      await writeFileAtomic(join(flags.outputFolder, `${p.name}.png`), p.png);
    }
    log.info(
      `done in ${((Date.now() - started) / 1000).toFixed(1)}s: ${stats.rows} rows; stats.json, stats.md and ${plots.length} plots (svg + png) in ${flags.outputFolder}`,
    );
    return 0;
  } catch (err) {
    log.error(errorMessage(err));
    return 1;
  } finally {
    db?.close();
  }
}

if (isMainModule(import.meta.url)) {
  process.exitCode = await main();
}
