// Naming the parquet parts that stats.ts and filter.ts read: a folder (its *.parquet files, not the
// _rejects/ or _tmp/ ones), one file, or a glob.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { sqlString } from '../lib/parquet.ts';

export interface ParquetSource {
  /** The part files in name order (empty for a glob, which DuckDB expands). */
  files: string[];
  /** A FROM-clause expression reading all of them. */
  sql: string;
  description: string;
}

export async function parquetSource(input: string): Promise<ParquetSource> {
  if (/[*?[]/.test(input)) return { files: [], sql: `read_parquet(${sqlString(input)}, union_by_name=true)`, description: input };
  const info = await stat(input).catch(() => null);
  if (!info) throw new Error(`input ${input} does not exist; pass a folder of parquet parts, a file or a glob`);
  const files = info.isFile()
    ? [input]
    : (await readdir(input)).filter((n) => n.endsWith('.parquet') && !n.startsWith('.') && !n.startsWith('_')).sort().map((n) => join(input, n));
  if (files.length === 0) throw new Error(`no *.parquet files in ${input}; run deduplicate/run.ts first or point --input at the parts`);
  return { files, sql: `read_parquet([${files.map(sqlString).join(', ')}], union_by_name=true)`, description: input };
}
