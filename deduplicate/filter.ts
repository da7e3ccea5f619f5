// Subsets of stage-2 parts by resolution, similarity, NSFW value or any SQL boolean expression.
// Each input part gives the output part of the same name, rows in the same order, same schema.
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import { CliError, defineCli, isMainModule } from '../lib/cli.ts';
import { errorMessage, log } from '../lib/log.ts';
import { lockOutputOrExit } from '../lib/output-lock.ts';
import { openDb, sqlString, type Db } from '../lib/parquet.ts';
import { Progress } from '../lib/progress.ts';
import { abandonOutput, claimOutputFolder, publishOutput, startStaging, type OutputClaim } from './output-folder.ts';
import { parquetSource } from './parquet-input.ts';
import { checkDbFlags } from './settings.ts';
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

/**
 * Why `where` is not one self-contained expression: a parenthesis closed that it did not open, one
 * left open, a comment or a `;` outside quotes. Such text can pass a check in one query and break
 * out of (or comment away) the parentheses it is put in elsewhere. Null when it is self-contained.
 */
export function whereStructureProblem(where: string): string | null {
  let depth = 0;
  for (let i = 0; i < where.length; i++) {
    const c = where[i]!;
    if (c === "'" || c === '"') {
      const end = where.indexOf(c, i + 1);
      if (end < 0) return `a ${c === "'" ? 'string' : 'quoted name'} is never closed`;
      i = end; // a doubled quote inside is two quoted runs back to back
    } else if (c === '$' && /^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/.test(where.slice(i))) {
      const tag = /^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/.exec(where.slice(i))![0];
      const end = where.indexOf(tag, i + tag.length);
      if (end < 0) return `the ${tag} string is never closed`;
      i = end + tag.length - 1;
    } else if (c === '(') depth++;
    else if (c === ')' && --depth < 0) return 'it closes a parenthesis it did not open';
    else if (c === ';') return 'it holds a ; (one expression only)';
    else if ((c === '-' && where[i + 1] === '-') || (c === '/' && where[i + 1] === '*')) return 'it holds a comment';
  }
  return depth > 0 ? 'a parenthesis is never closed' : null;
}

/**
 * Checks a --where expression before any data is read or any output touched: its structure, then
 * DuckDB's own parser and binder on every query it will be part of, and that it is a boolean.
 */
export async function checkWhere(db: Db, from: string, where: string, predicate = `(${where})`): Promise<void> {
  const fail = (why: string): never => {
    throw new BadExpressionError(`--where ${JSON.stringify(where)} is not a usable SQL boolean expression: ${why}`);
  };
  const clean = (err: unknown): string => errorMessage(err).replace(/\s*LINE \d+:.*$/, '');
  const structure = whereStructureProblem(where);
  if (structure) fail(structure);
  const sql = `SELECT (${where}) AS keep FROM ${from}`;
  let count: number;
  try {
    count = (await db.connection.extractStatements(sql)).count;
  } catch (err) {
    return fail(clean(err));
  }
  if (count !== 1) fail('it must be one expression, not several statements');
  let type: string | undefined;
  try {
    type = (await db.all<{ column_type: string }>(`DESCRIBE ${sql}`))[0]?.column_type;
  } catch (err) {
    return fail(clean(err));
  }
  if (type !== 'BOOLEAN' && type !== '"NULL"' && type !== 'NULL') fail(`it gives ${type}, not BOOLEAN`);
  for (const query of filterQueries(from, predicate)) {
    try {
      await db.run(`EXPLAIN ${query}`);
    } catch (err) {
      fail(clean(err));
    }
  }
}

/** The two queries run per part: the counts, and the rows kept. */
function filterQueries(from: string, predicate: string): [string, string] {
  return [`SELECT count(*) AS n, count(*) FILTER (WHERE ${predicate}) AS kept FROM ${from}`, `SELECT * FROM ${from} WHERE ${predicate}`];
}

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const { flags } = filterCli.run(argv);
  const started = Date.now();
  const out = flags.outputFolder;
  let db: Db | undefined;
  try {
    await checkDbFlags(flags);
  } catch (err) {
    log.error(errorMessage(err));
    return 2;
  }
  // One run per output folder (issue 16, item 6); exit 2 naming the holder.
  const lock = await lockOutputOrExit(out);
  let claim: OutputClaim | undefined;
  try {
    const source = await parquetSource(flags.input);
    if (source.files.length === 0) throw new CliError('--input must be a folder of parts or one parquet file, not a glob');
    const names = source.files.map((f) => basename(f));
    // Everything that can be checked is checked before the output folder is touched.
    claim = await claimOutputFolder(out, '_filter.json', names);
    db = await openDb({ memoryLimit: flags.memoryLimit, threads: flags.threads, tempDirectory: join(claim.tmp, 'spill') });
    await db.run('SET preserve_insertion_order = true');
    const predicate = predicateSql(flags);
    if (flags.where != null) await checkWhere(db, source.sql, flags.where, predicate);
    await startStaging(claim);
    const progress = new Progress({ label: 'filter', total: source.files.length, unit: 'parts' });
    let rowsIn = 0;
    let rowsOut = 0;
    for (const file of source.files) {
      const from = `read_parquet(${sqlString(file)})`;
      const [counting, keeping] = filterQueries(from, predicate);
      const [r] = await db.all<{ n: bigint; kept: bigint }>(counting);
      rowsIn += Number(r!.n);
      rowsOut += Number(r!.kept);
      await db.run(
        `COPY (${keeping}) TO ${sqlString(join(claim.tmp, basename(file)))} (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE ${ROW_GROUP_SIZE})`,
      );
      progress.item(true);
    }
    progress.stop();
    db.close();
    db = undefined;
    const tmp = claim.tmp;
    await publishOutput(claim, names, (f) => join(tmp, f), () => ({
      input: flags.input, predicate, rows_in: rowsIn, rows_out: rowsOut, parts: source.files.length, seconds: (Date.now() - started) / 1000,
    }));
    log.info(`done: kept ${rowsOut} of ${rowsIn} rows (${predicate}) in ${source.files.length} parts under ${out}`);
    return 0;
  } catch (err) {
    log.error(errorMessage(err));
    try {
      db?.close();
    } catch {
      // already closed
    }
    db = undefined;
    if (claim) await abandonOutput(claim);
    return err instanceof BadExpressionError || err instanceof CliError ? 2 : 1;
  } finally {
    db?.close();
    // Released here too, not only at exit: main() also runs in-process (tests, the demo).
    lock.release();
  }
}

if (isMainModule(import.meta.url)) {
  process.exitCode = await main();
}
