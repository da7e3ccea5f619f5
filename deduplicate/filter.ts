// Subsets of stage-2 parts by resolution, similarity, NSFW value or any SQL boolean expression.
// Each input part gives the output part of the same name, rows in the same order, same schema.
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic-file.ts';
import { defineCli, isMainModule } from '../lib/cli.ts';
import { errorMessage, log } from '../lib/log.ts';
import { lockOutputOrExit } from '../lib/output-lock.ts';
import { openDb, sqlString, type Db } from '../lib/parquet.ts';
import { Progress } from '../lib/progress.ts';
import { parquetSource } from './parquet-input.ts';
import { ROW_GROUP_SIZE } from './pipeline.ts';

export const filterCli = defineCli({
  command: 'npx tsx deduplicate/filter.ts',
  summary: 'Write the subset of deduplicated parquet parts that passes every given condition.',
  flags: {
    input: { type: 'string', required: true, help: 'Folder of part-NNNNN.parquet files (or one file)' },
    'output-folder': { type: 'string', required: true, help: 'Where the filtered parts (same names), _filter.json and _SUCCESS go' },
    'min-width': { type: 'int', default: null, help: 'Keep rows with WIDTH >= N (the column as stored)' },
    'min-height': { type: 'int', default: null, help: 'Keep rows with HEIGHT >= N (the column as stored)' },
    'min-similarity': { type: 'float', default: null, help: 'Keep rows with similarity >= X' },
    nsfw: { type: 'list', default: null, help: 'Keep rows whose NSFW is one of these, e.g. UNLIKELY,UNSURE' },
    where: { type: 'string', default: null, help: "Keep rows where this SQL boolean expression is true, e.g. 'length(TEXT) >= 20'" },
    'memory-limit': { type: 'string', default: '4GB', help: "DuckDB's memory limit" },
    threads: { type: 'int', default: availableParallelism(), help: 'DuckDB threads' },
  },
});

export interface FilterConditions {
  minWidth?: number | null;
  minHeight?: number | null;
  minSimilarity?: number | null;
  nsfw?: string[] | null;
  where?: string | null;
}

export class BadExpressionError extends Error {}

/** The WHERE clause for the conditions; `TRUE` when none is given. */
export function predicateSql(c: FilterConditions): string {
  const parts: string[] = [];
  if (c.minWidth != null) parts.push(`WIDTH >= ${Math.trunc(c.minWidth)}`);
  if (c.minHeight != null) parts.push(`HEIGHT >= ${Math.trunc(c.minHeight)}`);
  if (c.minSimilarity != null) parts.push(`similarity >= ${Number(c.minSimilarity)}`);
  if (c.nsfw != null && c.nsfw.length > 0) parts.push(`NSFW IN (${c.nsfw.map(sqlString).join(', ')})`);
  if (c.where != null && c.where.trim() !== '') parts.push(`(${c.where})`);
  return parts.length ? parts.join(' AND ') : 'TRUE';
}

/** Checks a --where expression with DuckDB's own parser and binder before any data is read. */
export async function checkWhere(db: Db, from: string, where: string): Promise<void> {
  const sql = `SELECT (${where}) AS keep FROM ${from}`;
  const fail = (why: string): never => {
    throw new BadExpressionError(`--where ${JSON.stringify(where)} is not a usable SQL boolean expression: ${why}`);
  };
  let count: number;
  try {
    count = (await db.connection.extractStatements(sql)).count;
  } catch (err) {
    return fail(errorMessage(err).replace(/\s*LINE \d+:.*$/, ""));
  }
  if (count !== 1) fail('it must be one expression, not several statements');
  let type: string | undefined;
  try {
    type = (await db.all<{ column_type: string }>(`DESCRIBE ${sql}`))[0]?.column_type;
  } catch (err) {
    return fail(errorMessage(err).replace(/\s*LINE \d+:.*$/, ""));
  }
  if (type !== 'BOOLEAN' && type !== '"NULL"' && type !== 'NULL') fail(`it gives ${type}, not BOOLEAN`);
}

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const { flags } = filterCli.run(argv);
  const started = Date.now();
  const out = flags.outputFolder;
  const tmp = join(out, '_tmp');
  // One run per output folder (issue 16, item 6); exit 2 naming the holder.
  await lockOutputOrExit(out);
  let db: Db | undefined;
  try {
    const source = await parquetSource(flags.input);
    if (source.files.length === 0) throw new Error('--input must be a folder of parts or one parquet file, not a glob');
    await rm(join(out, '_SUCCESS'), { force: true });
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    db = await openDb({ memoryLimit: flags.memoryLimit, threads: flags.threads, tempDirectory: join(tmp, 'spill') });
    await db.run('SET preserve_insertion_order = true');
    if (flags.where != null) await checkWhere(db, source.sql, flags.where);
    const predicate = predicateSql(flags);
    const progress = new Progress({ label: 'filter', total: source.files.length, unit: 'parts' });
    let rowsIn = 0;
    let rowsOut = 0;
    for (const file of source.files) {
      const from = `read_parquet(${sqlString(file)})`;
      const [r] = await db.all<{ n: bigint; kept: bigint }>(`SELECT count(*) AS n, count(*) FILTER (WHERE ${predicate}) AS kept FROM ${from}`);
      rowsIn += Number(r!.n);
      rowsOut += Number(r!.kept);
      await db.run(
        `COPY (SELECT * FROM ${from} WHERE ${predicate}) TO ${sqlString(join(tmp, basename(file)))} (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE ${ROW_GROUP_SIZE})`,
      );
      progress.item(true);
    }
    progress.stop();
    db.close();
    db = undefined;
    for (const name of await readdir(out)) if (name.endsWith('.parquet')) await rm(join(out, name), { force: true });
    for (const file of source.files) await rename(join(tmp, basename(file)), join(out, basename(file)));
    await rm(tmp, { recursive: true, force: true });
    const summary = { input: flags.input, predicate, rows_in: rowsIn, rows_out: rowsOut, parts: source.files.length, seconds: (Date.now() - started) / 1000 };
    await writeFileAtomic(join(out, '_filter.json'), JSON.stringify(summary, null, 2) + '\n');
    await writeFileAtomic(join(out, '_SUCCESS'), '');
    log.info(`done: kept ${rowsOut} of ${rowsIn} rows (${predicate}) in ${source.files.length} parts under ${out}`);
    return 0;
  } catch (err) {
    log.error(errorMessage(err));
    return err instanceof BadExpressionError ? 2 : 1;
  } finally {
    db?.close();
  }
}

if (isMainModule(import.meta.url)) {
  process.exitCode = await main();
}
