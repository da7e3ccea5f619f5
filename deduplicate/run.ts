// Stage 2 CLI: crawling@home CSVs -> deduplicated, shuffled parquet parts (contracts.md section 2).
import { availableParallelism } from 'node:os';
import { CliError, defineCli, isMainModule } from '../lib/cli.ts';
import { errorMessage, log } from '../lib/log.ts';
import { lockOutputOrExit } from '../lib/output-lock.ts';
import { deduplicate, type DedupSummary } from './pipeline.ts';
import { MAX_PARTS, checkDbFlags, parseDelimiter } from './settings.ts';

export const dedupCli = defineCli({
  command: 'npx tsx deduplicate/run.ts',
  summary: 'Deduplicate crawling@home CSVs on exact (URL, TEXT) into shuffled snappy parquet parts.',
  flags: {
    input: { type: 'string', required: true, help: 'Folder searched for *.csv and *.csv.gz (recursively), or a glob' },
    'output-folder': { type: 'string', required: true, help: 'Where part-NNNNN.parquet, _rejects/, _summary.json and _SUCCESS go' },
    parts: { type: 'int', default: 32, help: `Number of parquet parts (1 to ${MAX_PARTS}, and at most the number of unique rows)` },
    seed: { type: 'int', default: 0, help: 'Shuffle seed; the same input and seed give byte-identical parts' },
    delimiter: { type: 'string', default: '|', help: "Field separator of the CSVs: one character, or '\\t' for tab" },
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
  let delimiter: string;
  try {
    // Bad values are one line naming the flag, before any work (exit 2).
    if (!(flags.parts >= 1 && flags.parts <= MAX_PARTS)) throw new CliError(`--parts ${flags.parts}: must be between 1 and ${MAX_PARTS}`);
    delimiter = parseDelimiter(flags.delimiter);
    if (flags.requireColumn.trim() === '') throw new CliError('--require-column must name a column, e.g. similarity');
    await checkDbFlags(flags);
  } catch (err) {
    log.error(errorMessage(err));
    return 2;
  }
  // One run per output folder (issue 16, item 6); exit 2 naming the holder.
  const lock = await lockOutputOrExit(flags.outputFolder);
  try {
    let summary: DedupSummary;
    try {
      summary = await deduplicate({
        input: flags.input,
        outputFolder: flags.outputFolder,
        parts: flags.parts,
        seed: flags.seed,
        delimiter,
        memoryLimit: flags.memoryLimit,
        threads: flags.threads,
        requireColumn: flags.requireColumn,
        fixSwappedDimensions: flags.fixSwappedDimensions,
      });
    } catch (err) {
      log.error(errorMessage(err));
      return err instanceof CliError ? 2 : 1;
    }
    const skipped = Object.entries(summary.files_skipped).map(([r, n]) => `${n} (${r})`).join(', ') || '0';
    log.info(
      `done in ${summary.seconds}s: ${summary.files_read} files read, skipped ${skipped}; ${summary.rows_read} rows read, ` +
        `${summary.rows_rejected} rejected (see _rejects/rejects.parquet), ${summary.duplicates_removed} duplicates removed, ` +
        `${summary.rows_unique} unique rows in ${summary.parts} parts under ${flags.outputFolder}; ` +
        `null casts ${JSON.stringify(summary.null_casts)}`,
    );
    if (summary.files_not_read.length > 0) {
      const names = summary.files_not_read.map((f) => f.file);
      log.warn(
        `${names.length} files were skipped whole and their rows are in no count: ${names.slice(0, 5).join(', ')}` +
          `${names.length > 5 ? ` and ${names.length - 5} more` : ''} (see files_not_read in _summary.json); fix or re-download them and rerun`,
      );
    }
    return 0;
  } finally {
    // Released here too, not only at exit: main() also runs in-process (tests, the demo).
    lock.release();
  }
}

if (isMainModule(import.meta.url)) {
  process.exitCode = await main();
}
