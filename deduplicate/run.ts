// Stage 2 CLI: crawling@home CSVs -> deduplicated, shuffled parquet parts (contracts.md section 2).
import { availableParallelism } from 'node:os';
import { defineCli, isMainModule } from '../lib/cli.ts';
import { errorMessage, log } from '../lib/log.ts';
import { lockOutputOrExit } from '../lib/output-lock.ts';
import { deduplicate, type DedupSummary } from './pipeline.ts';

export const dedupCli = defineCli({
  command: 'npx tsx deduplicate/run.ts',
  summary: 'Deduplicate crawling@home CSVs on exact (URL, TEXT) into shuffled snappy parquet parts.',
  flags: {
    input: { type: 'string', required: true, help: 'Folder searched for *.csv and *.csv.gz (recursively), or a glob' },
    'output-folder': { type: 'string', required: true, help: 'Where part-NNNNN.parquet, _rejects/, _summary.json and _SUCCESS go' },
    parts: { type: 'int', default: 32, help: 'Number of parquet parts' },
    seed: { type: 'int', default: 0, help: 'Shuffle seed; the same input and seed give byte-identical parts' },
    delimiter: { type: 'string', default: '|', help: 'Field separator of the CSVs' },
    'memory-limit': { type: 'string', default: '8GB', help: "DuckDB's memory limit; it spills to OUTPUT/_tmp beyond it" },
    threads: { type: 'int', default: availableParallelism(), help: 'DuckDB threads' },
    'require-column': { type: 'string', default: 'similarity', help: 'Files whose header lacks this column are skipped (and counted)' },
    'fix-swapped-dimensions': {
      type: 'bool',
      default: false,
      help: 'Swap HEIGHT and WIDTH back (workers wrote the width under HEIGHT); off keeps the published meaning',
    },
  },
  epilog: `Example:
  npx tsx deduplicate/run.ts --input csvs/ --output-folder cah_dataframe_unique --memory-limit 2GB
A rerun always recomputes from scratch; outputs of an interrupted run are never taken as complete.`,
});

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const { flags } = dedupCli.run(argv);
  if (flags.parts < 1) {
    log.error('--parts must be at least 1');
    return 2;
  }
  // One run per output folder (issue 16, item 6); exit 2 naming the holder.
  await lockOutputOrExit(flags.outputFolder);
  let summary: DedupSummary;
  try {
    summary = await deduplicate({
      input: flags.input,
      outputFolder: flags.outputFolder,
      parts: flags.parts,
      seed: flags.seed,
      delimiter: flags.delimiter,
      memoryLimit: flags.memoryLimit,
      threads: flags.threads,
      requireColumn: flags.requireColumn,
      fixSwappedDimensions: flags.fixSwappedDimensions,
    });
  } catch (err) {
    log.error(errorMessage(err));
    return 1;
  }
  const skipped = Object.entries(summary.files_skipped).map(([r, n]) => `${n} (${r})`).join(', ') || '0';
  log.info(
    `done in ${summary.seconds}s: ${summary.files_read} files read, skipped ${skipped}; ${summary.rows_read} rows read, ` +
      `${summary.rows_rejected} rejected (see _rejects/rejects.parquet), ${summary.duplicates_removed} duplicates removed, ` +
      `${summary.rows_unique} unique rows in ${summary.parts} parts under ${flags.outputFolder}; ` +
      `null casts ${JSON.stringify(summary.null_casts)}`,
  );
  return 0;
}

if (isMainModule(import.meta.url)) {
  process.exitCode = await main();
}
