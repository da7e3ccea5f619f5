// Checks of the flags that reach DuckDB or the CSV reader, done before any work so that a bad
// value is one line naming the flag (exit 2), not "Failed to set config" or a hang later on.
import { DuckDBInstance } from '@duckdb/node-api';
import { CliError } from '../lib/cli.ts';
import { errorMessage } from '../lib/log.ts';

/** Most parquet parts run.ts writes; each part is one file and one COPY. */
export const MAX_PARTS = 100_000;
/** Most DuckDB threads accepted; DuckDB itself takes any count and starts that many threads. */
export const MAX_THREADS = 1024;

/**
 * The field separator a user means: one ASCII character, or a spelled-out tab (`\t`, `tab`), as
 * typed in a shell where `'\t'` stays two characters. The quote, line breaks and NUL cannot be one.
 */
export function parseDelimiter(raw: string): string {
  const named: Record<string, string> = { '\\t': '\t', tab: '\t', TAB: '\t', '\\|': '|' };
  const d = named[raw] ?? raw;
  const shown = JSON.stringify(raw);
  if (d.length !== 1) throw new CliError(`--delimiter ${shown}: must be exactly one character, e.g. '|', ',' or '\\t' for tab`);
  if (d.charCodeAt(0) > 0x7e || (d.charCodeAt(0) < 0x20 && d !== '\t')) {
    throw new CliError(`--delimiter ${shown}: must be a printable ASCII character or '\\t' for tab`);
  }
  if (d === '"') throw new CliError(`--delimiter ${shown}: the quote character cannot also separate fields`);
  return d;
}

function checkThreads(threads: number): void {
  if (threads < 1 || threads > MAX_THREADS) throw new CliError(`--threads ${threads}: must be between 1 and ${MAX_THREADS}`);
}

/**
 * A DuckDB memory limit such as 8GB, 500MB or 1.5GiB, checked by DuckDB itself (on an empty
 * in-memory database) so that what passes here also passes later.
 */
async function checkMemoryLimit(value: string): Promise<void> {
  const bad = (why: string): CliError => new CliError(`--memory-limit ${JSON.stringify(value)}: ${why}; write e.g. 8GB, 500MB or 1.5GiB`);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  if (!m) throw bad('not a size');
  if (Number(m[1]) <= 0) throw bad('must be more than 0');
  let instance: DuckDBInstance | undefined;
  try {
    instance = await DuckDBInstance.create(':memory:', { memory_limit: value });
  } catch (err) {
    throw bad(`DuckDB does not take it (${errorMessage(err)})`);
  } finally {
    instance?.closeSync();
  }
}

/** --threads and --memory-limit, the two flags every deduplicate CLI hands to DuckDB. */
export async function checkDbFlags(flags: { threads: number; memoryLimit: string }): Promise<void> {
  checkThreads(flags.threads);
  await checkMemoryLimit(flags.memoryLimit);
}
