// Stage 2 as one DuckDB job: CSV groups -> typed rows -> first row per (URL, TEXT) -> seeded
// shuffle -> parquet parts. Everything large stays inside DuckDB, which spills to OUT/_tmp past
// the memory limit; JS holds only the file list and counters.
import { mkdir } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { CliError } from '../lib/cli.ts';
import { errorMessage, log } from '../lib/log.ts';
import { openDb, sqlIdent, sqlString, type Db } from '../lib/parquet.ts';
import { Progress } from '../lib/progress.ts';
import { discoverCsvFiles, gzipDamage, lineNumbersAt, readHeader, type CsvSource } from './csv-sources.ts';
import { abandonOutput, claimOutputFolder, publishOutput, startStaging, type OutputClaim } from './output-folder.ts';
import { CAST_COLUMNS, CAST_MACROS_SQL, OUTPUT_COLUMNS, castExpression } from './schema.ts';
import { MAX_PARTS } from './settings.ts';

export interface DedupOptions {
  input: string;
  outputFolder: string;
  parts: number;
  seed: number;
  delimiter: string;
  memoryLimit: string;
  threads: number;
  requireColumn: string;
  fixSwappedDimensions: boolean;
  /** Files per read_csv call; bounds the SQL text and the rejects kept in memory at once. */
  filesPerBatch?: number;
  /** Test hook: called after each loaded batch (a test kills the process here). */
  onBatchLoaded?: (batch: number) => void;
}

export interface DedupSummary {
  files_read: number;
  files_skipped: Record<string, number>;
  rows_read: number;
  rows_rejected: number;
  null_casts: Record<string, number>;
  rows_unique: number;
  duplicates_removed: number;
  parts: number;
  seconds: number;
  /** Not in the contract's list: rows of skipped files, so that every row read is accounted for. */
  rows_in_skipped_files: number;
  /** Not in the contract's list: files skipped whole (damaged gzip, binary, unreadable), whose rows nobody counted. */
  files_not_read: { file: string; reason: string }[];
}

export const ROW_GROUP_SIZE = 122_880;
export const partName = (i: number): string => `part-${String(i).padStart(5, '0')}.parquet`;
const REJECTS_FILE = '_rejects/rejects.parquet';
const REJECTS_TABLE = 'cah_reject_errors';
const REJECTS_SCAN = 'cah_reject_scans';

interface Group {
  columns: string[];
  files: { src: CsvSource; rank: number }[];
}

const num = (v: unknown): number => Number(v ?? 0);

function csvOptions(columns: readonly string[], delimiter: string, rejectsTable: string, rejectsScan: string): string {
  const struct = columns.map((c) => `${sqlString(c)}: 'VARCHAR'`).join(', ');
  // pandas' dialect, stated in full so no sniffing can pick Spark's backslash escape or give up.
  return [
    `delim=${sqlString(delimiter)}`, `quote='"'`, `escape='"'`, 'header=true', 'auto_detect=false',
    `columns={${struct}}`, 'store_rejects=true', `rejects_table=${sqlString(rejectsTable)}`,
    `rejects_scan=${sqlString(rejectsScan)}`, `compression='auto'`, 'null_padding=false',
  ].join(', ');
}

/** The typed output columns read from one column set; raw text stays in `raw_<name>`. */
function selectTyped(columns: readonly string[], opts: DedupOptions): { inner: string; mask: string } {
  const present = new Set(columns);
  const source = (name: string): string => {
    // Workers wrote width under HEIGHT and height under WIDTH (reference 6.1).
    if (opts.fixSwappedDimensions && name === 'HEIGHT') return 'WIDTH';
    if (opts.fixSwappedDimensions && name === 'WIDTH') return 'HEIGHT';
    return name;
  };
  const inner = OUTPUT_COLUMNS.map((c) => {
    const src = source(c.name);
    const raw = present.has(src) ? sqlIdent(src) : 'NULL::VARCHAR';
    return `${raw} AS ${sqlIdent(`raw_${c.name}`)}, ${castExpression(c.type, raw)} AS ${sqlIdent(c.name)}`;
  }).join(', ');
  const mask = CAST_COLUMNS.map((c, bit) => `(cast_failed(${sqlIdent(`raw_${c.name}`)}, ${sqlIdent(c.name)})::UTINYINT << ${bit})`).join(' | ');
  return { inner, mask };
}

export async function deduplicate(opts: DedupOptions): Promise<DedupSummary> {
  const started = Date.now();
  const out = resolve(opts.outputFolder);
  // Option checks for callers that skip the CLI's (an empty delimiter would never end a header split).
  if (opts.delimiter.length !== 1) throw new CliError(`--delimiter ${JSON.stringify(opts.delimiter)}: must be exactly one character`);
  if (!(opts.parts >= 1 && opts.parts <= MAX_PARTS)) throw new CliError(`--parts ${opts.parts}: must be between 1 and ${MAX_PARTS}`);

  // 1. Discover files, and check the output folder, before anything in it is touched.
  const sources = await discoverCsvFiles(opts.input);
  if (sources.length === 0) throw new Error(`no *.csv or *.csv.gz files found under ${opts.input}; check --input (nothing was written)`);
  const outputFiles = [...Array.from({ length: opts.parts }, (_, p) => partName(p)), REJECTS_FILE];
  const claim = await claimOutputFolder(out, '_summary.json', outputFiles, legacyOutputFiles);
  try {
    return await deduplicateInto(claim, sources, outputFiles, opts, started);
  } catch (err) {
    // A failed run leaves the folder as it found it (an earlier complete output included).
    await abandonOutput(claim);
    throw err;
  }
}

/** What a run.ts from before the `files` list in _summary.json wrote. */
const legacyOutputFiles = (names: readonly string[]): string[] => [
  ...names.filter((n) => /^part-\d+\.parquet$/.test(n)),
  ...(names.includes('_rejects') ? [REJECTS_FILE] : []),
];

async function deduplicateInto(claim: OutputClaim, sources: CsvSource[], outputFiles: string[], opts: DedupOptions, started: number): Promise<DedupSummary> {
  // Wall and CPU seconds per phase, logged at the end: CPU above wall shows the threads at work.
  const timings: string[] = [];
  let mark = started;
  let cpu = process.cpuUsage();
  const phase = (name: string): void => {
    const used = process.cpuUsage(cpu);
    timings.push(`${name} ${((Date.now() - mark) / 1000).toFixed(1)}s (cpu ${((used.user + used.system) / 1e6).toFixed(1)}s)`);
    mark = Date.now();
    cpu = process.cpuUsage();
  };
  const tmp = claim.tmp;
  const staging = join(tmp, 'staging');
  // A rerun after a kill starts clean: nothing of an earlier attempt is reused.
  await startStaging(claim);
  await mkdir(join(staging, '_rejects'), { recursive: true });

  const discover = new Progress({ label: 'headers', total: sources.length, unit: 'files' });
  const headers = new Array<Awaited<ReturnType<typeof readHeader>>>(sources.length);
  let nextHeader = 0;
  await Promise.all(
    Array.from({ length: Math.min(16, sources.length) }, async () => {
      while (nextHeader < sources.length) {
        const i = nextHeader++;
        const h = await readHeader(sources[i]!, opts.delimiter);
        // DuckDB stops quietly at a truncated gzip: check the whole stream before it reads one.
        const damage = 'columns' in h && sources[i]!.gzip ? await gzipDamage(sources[i]!) : null;
        headers[i] = damage ? { skip: 'damaged gzip', detail: damage, advice: 're-download it (gzip -t checks a file)' } : h;
        discover.item('columns' in headers[i]!);
      }
    }),
  );
  discover.stop();

  const filesSkipped: Record<string, number> = {};
  const skip = (reason: string): void => void (filesSkipped[reason] = (filesSkipped[reason] ?? 0) + 1);
  // Files whose rows are not read at all (damaged, binary, unreadable), by name: reported one per
  // line as found and listed in _summary.json, so no loss passes for a complete read.
  const notRead: { file: string; reason: string }[] = [];
  const skipWhole = (src: CsvSource, reason: string, detail: string, advice: string): void => {
    skip(reason);
    const file = displayPath(src.path, opts.input);
    notRead.push({ file, reason: detail === reason ? reason : `${reason}: ${detail}` });
    log.warn(`${src.path}: skipped whole, ${reason}${detail === reason ? '' : ` (${detail})`}; its rows are not read or counted; ${advice}`);
  };
  const readGroups = new Map<string, Group>();
  const skippedGroups = new Map<string, Group>();
  sources.forEach((src, rank) => {
    const h = headers[rank]!;
    if ('skip' in h) return skipWhole(src, h.skip, h.detail, h.advice);
    const key = JSON.stringify(h.columns);
    const target = h.columns.includes(opts.requireColumn) ? readGroups : skippedGroups;
    if (!h.columns.includes(opts.requireColumn)) skip(`missing column ${opts.requireColumn}`);
    const g = target.get(key) ?? { columns: h.columns, files: [] };
    g.files.push({ src, rank });
    target.set(key, g);
  });
  phase('headers');
  if (readGroups.size === 0) {
    const why = Object.entries(filesSkipped).map(([r, n]) => `${n} ${r}`).join(', ');
    throw new Error(`none of the ${sources.length} input files can be read (${why}); nothing was written; check --input, --delimiter and --require-column`);
  }
  log.info(`${sources.length} files: ${readGroups.size} column sets to read, ${skippedGroups.size} skipped for lacking ${opts.requireColumn}`);

  // In memory, spilling to OUT/_tmp/spill past --memory-limit: measured twice as fast as a
  // database file at 10M rows, with the same peak RSS (about 2.5 GB at a 2GB limit).
  const db = await openDb({ memoryLimit: opts.memoryLimit, threads: opts.threads, tempDirectory: join(tmp, 'spill') });
  const connections = [db.connection];
  const closeOthers = (): void => {
    for (const c of connections.splice(1)) c.closeSync();
  };
  try {
    await db.run(CAST_MACROS_SQL);
    const typed = OUTPUT_COLUMNS.map((c) => `${sqlIdent(c.name)} ${c.type}`).join(', ');
    await db.run(`CREATE TABLE rejects_found (file_rank INTEGER, line_byte_position BIGINT, record_line BIGINT, reason VARCHAR, raw VARCHAR)`);

    // 2. Load every readable group, batch by batch; a batch DuckDB cannot read at all is retried
    //    file by file so one corrupt file is skipped, not the whole group. Batches run on several
    //    connections at once, one DuckDB thread each, into one table per connection: an
    //    order-keeping INSERT on several threads costs about 20% more CPU than on one (measured).
    //    A file always lands whole in one table, in line order, which is all that "first" needs.
    const workers = Math.max(1, Math.min(opts.threads, MAX_CONCURRENT_QUERIES));
    await db.run(`SET threads = ${Math.max(1, Math.floor(opts.threads / workers))}`);
    while (connections.length < workers) connections.push(await db.connect());
    const rawTables = connections.map((_, w) => `raw_${w}`);
    for (const t of rawTables) await db.run(`CREATE TABLE ${t} (file_rank INTEGER, ${typed}, cast_mask UTINYINT)`);
    const batches: { g: Group; files: Group['files']; counting: boolean }[] = [];
    const perBatch = opts.filesPerBatch ?? 256;
    for (const [groups, counting] of [[readGroups, false], [skippedGroups, true]] as const) {
      for (const g of groups.values()) {
        // Even batches, so that no connection is left with a small remainder at the end.
        const size = Math.ceil(g.files.length / Math.ceil(g.files.length / perBatch));
        for (let i = 0; i < g.files.length; i += size) batches.push({ g, files: g.files.slice(i, i + size), counting });
      }
    }
    const totalBytes = batches.reduce((a, b) => a + b.files.reduce((c, f) => c + f.src.bytes, 0), 0);
    const load = new Progress({ label: 'read', total: batches.reduce((a, b) => a + b.files.length, 0), totalBytes, unit: 'files' });
    let batchNo = 0;
    let rowsInSkippedFiles = 0;

    const loadFiles = async (w: number, g: Group, files: Group['files'], counting: boolean): Promise<void> => {
      const connection = connections[w]!;
      const rejectsTable = `${REJECTS_TABLE}_${w}`;
      const rejectsScan = `${REJECTS_SCAN}_${w}`;
      const dropRejects = `DROP TABLE IF EXISTS ${rejectsTable}; DROP TABLE IF EXISTS ${rejectsScan}`;
      const list = `[${files.map((f) => sqlString(f.src.path)).join(', ')}]`;
      const ranks = `[${files.map((f) => f.rank).join(', ')}]`;
      const read = `read_csv(${list}, ${csvOptions(g.columns, opts.delimiter, rejectsTable, rejectsScan)})`;
      const { inner, mask } = selectTyped(g.columns, opts);
      const names = OUTPUT_COLUMNS.map((c) => sqlIdent(c.name)).join(', ');
      const sql = counting
        ? `SELECT count(*) AS n FROM ${read}`
        : `INSERT INTO ${rawTables[w]} SELECT file_rank, ${names}, ${mask} FROM (SELECT ${ranks}[file_index::BIGINT + 1] AS file_rank, ${inner} FROM ${read})`;
      try {
        const rows = (await connection.runAndReadAll(sql)).getRowObjectsJS() as { n?: bigint }[];
        if (counting) rowsInSkippedFiles += num(rows[0]?.n);
      } catch (err) {
        // Only a file DuckDB cannot read is skipped; a mistake in our SQL must stop the run.
        if (!/^(IO Error|Invalid Input Error|Conversion Error)/.test(errorMessage(err))) throw err;
        await connection.run(dropRejects);
        if (files.length > 1) {
          for (const f of files) await loadFiles(w, g, [f], counting);
          return;
        }
        if (!counting) skipWhole(files[0]!.src, 'unreadable', `DuckDB: ${errorMessage(err)}`, 'check or re-download the file');
        else log.warn(`${files[0]!.src.path}: DuckDB cannot read it (${errorMessage(err)}); its rows are not in rows_in_skipped_files`);
        return;
      }
      // One reject row per error, several per bad line: keep one per (file, line).
      const rejected = `SELECT s.file_path, e.line_byte_position, min(e.line) AS line, arg_min(e.error_type || ': ' || e.error_message, e.byte_position) AS reason, min(e.csv_line) AS raw
        FROM ${rejectsTable} e JOIN ${rejectsScan} s USING (scan_id, file_id) GROUP BY s.file_path, e.line_byte_position`;
      if (counting) {
        const [r] = (await connection.runAndReadAll(`SELECT count(*) AS n FROM (${rejected})`)).getRowObjectsJS() as { n: bigint }[];
        rowsInSkippedFiles += num(r?.n);
      } else {
        const rankOf = files.map((f) => `WHEN ${sqlString(f.src.path)} THEN ${f.rank}`).join(' ');
        await connection.run(`INSERT INTO rejects_found SELECT CASE file_path ${rankOf} END, line_byte_position, line, reason, raw FROM (${rejected})`);
      }
      await connection.run(dropRejects);
    };

    await eachOnConnections(workers, batches.length, async (w, i) => {
      const { g, files, counting } = batches[i]!;
      await loadFiles(w, g, files, counting);
      for (const f of files) {
        load.item(true);
        load.addBytes(f.src.bytes);
      }
      opts.onBatchLoaded?.(batchNo++);
    });
    await db.run(`SET threads = ${opts.threads}`);
    load.stop();
    phase('read');

    // 3. Physical line numbers for the rejects, then _rejects/rejects.parquet.
    const rejectFiles = await db.all<{ file_rank: number; offsets: bigint[] }>(
      `SELECT file_rank, list(line_byte_position ORDER BY line_byte_position) AS offsets FROM rejects_found GROUP BY file_rank ORDER BY file_rank`,
    );
    await db.run(`CREATE TABLE reject_lines (file_rank INTEGER, line_byte_position BIGINT, line BIGINT)`);
    for (const { file_rank, offsets } of rejectFiles) {
      const lines = [...(await lineNumbersAt(sources[file_rank]!, offsets))];
      for (let i = 0; i < lines.length; i += 10_000) {
        const values = lines.slice(i, i + 10_000).map(([off, line]) => `(${file_rank}, ${off}, ${line})`).join(', ');
        await db.run(`INSERT INTO reject_lines VALUES ${values}`);
      }
    }
    await db.run(`CREATE TABLE files (file_rank INTEGER, file VARCHAR)`);
    const appender = await db.connection.createAppender('files');
    sources.forEach((s, rank) => {
      appender.appendInteger(rank);
      appender.appendVarchar(displayPath(s.path, opts.input));
      appender.endRow();
    });
    appender.closeSync();
    await copyParquet(
      db,
      `SELECT f.file, l.line, r.reason, r.raw FROM rejects_found r JOIN reject_lines l USING (file_rank, line_byte_position) JOIN files f USING (file_rank) ORDER BY r.file_rank, l.line`,
      join(staging, '_rejects', 'rejects.parquet'),
    );

    phase('rejects');
    // 4. Keep the first row per exact (URL, TEXT) in (file path, line) order: rowid follows the
    //    insertion order, which DuckDB preserves within each file. The aggregate keeps only the
    //    winning row's position (a small state that spills well), then the rows are fetched back.
    const dedup = new Progress({ label: 'dedup + shuffle', total: opts.parts + 1, unit: 'steps' });
    const seed = `${BigInt.asUintN(64, BigInt(opts.seed))}::UBIGINT`;
    // Every loaded row with its position, (file rank, row) packed into one BIGINT: 2^23 files of up
    // to 2^40 rows each. Row numbers restart in each table, but a file lies whole in one of them.
    const rawRows = `(${rawTables.map((t) => `SELECT *, (file_rank::BIGINT << 40) + rowid AS pos FROM ${t}`).join(' UNION ALL ')})`;
    // Row order inside these tables is irrelevant (parts are sorted by hash below), and keeping it
    // pins memory that a tight --memory-limit cannot spare.
    await db.run('SET preserve_insertion_order = false');
    await db.run(`CREATE TABLE firsts AS SELECT min(pos) AS pos FROM ${rawRows} GROUP BY URL, TEXT`);
    phase('dedup');
    const names = OUTPUT_COLUMNS.map((c) => sqlIdent(c.name)).join(', ');
    // 5. Seeded shuffle: part = hash(seed, URL, TEXT) mod parts, rows inside a part ordered by that
    //    hash; the (astronomically rare) rows with equal hashes by their first position, so the
    //    order is total and the same on every run. The window partitions by part and sorts each
    //    part in one pass, so each part lands in a contiguous run of the table and its COPY below
    //    reads only its own row groups (zone maps on `part`) instead of the whole table per part.
    //    Sorting on integers only is measured cheaper than (hash, URL, TEXT).
    await db.run(`CREATE TABLE shuffled AS
      SELECT ${names}, part, row_number() OVER (PARTITION BY part ORDER BY h, pos) AS rn
      FROM (SELECT *, (h % ${opts.parts})::INTEGER AS part
            FROM (SELECT ${names}, hash(${seed}, URL, TEXT) AS h, r.pos FROM ${rawRows} r SEMI JOIN firsts f ON r.pos = f.pos))`);
    await db.run('DROP TABLE firsts');
    const [counts] = await db.all<Record<string, bigint>>(`SELECT count(*) AS kept,
      (SELECT count(*) FROM shuffled) AS uniq, (SELECT count(*) FROM rejects_found) AS rejected,
      ${CAST_COLUMNS.map((c, bit) => `count(*) FILTER (WHERE cast_mask & ${1 << bit} <> 0) AS ${sqlIdent(`null_${c.name}`)}`).join(', ')} FROM ${rawRows}`);
    // Nothing to publish, or more parts than rows: say so and leave the folder as it was.
    const filesRead = sources.length - Object.values(filesSkipped).reduce((a, b) => a + b, 0);
    if (filesRead === 0) {
      const why = Object.entries(filesSkipped).map(([r, n]) => `${n} ${r}`).join(', ');
      throw new Error(`none of the ${sources.length} input files can be read (${why}); nothing was written; check --input, --delimiter and --require-column`);
    }
    if (num(counts!.uniq) === 0) throw new Error(`the ${filesRead} files read hold no valid data rows (see the warnings above); nothing was written`);
    if (opts.parts > num(counts!.uniq)) {
      throw new CliError(`--parts ${opts.parts} is more than the ${num(counts!.uniq)} unique rows; pass --parts ${num(counts!.uniq)} or fewer (nothing was written)`);
    }
    // The parts only need `shuffled`; freeing raw now leaves the memory limit to the writes.
    for (const t of rawTables) await db.run(`DROP TABLE ${t}`);
    dedup.item(true);
    phase('shuffle');
    // One part is too little work to keep every DuckDB thread busy (measured at 10M rows on 2
    // cores: 32 COPYs in turn 4.3 s, two at a time on one thread each 2.2 s), so several COPYs run
    // at once on their own connections, sharing the --threads budget. Each file's bytes do not
    // depend on the thread count.
    const writers = Math.min(workers, opts.parts);
    await db.run(`SET threads = ${Math.max(1, Math.floor(opts.threads / writers))}`);
    await eachOnConnections(writers, opts.parts, async (w, p) => {
      await connections[w]!.run(copySql(`SELECT ${names} FROM shuffled WHERE part = ${p} ORDER BY rn`, join(staging, partName(p))));
      dedup.item(true);
    });
    closeOthers();
    dedup.stop();
    phase('parts');

    const kept = num(counts!.kept);
    const rowsUnique = num(counts!.uniq);
    const rowsRejected = num(counts!.rejected);
    const summary: DedupSummary = {
      files_read: filesRead,
      files_skipped: filesSkipped,
      rows_read: kept + rowsRejected + rowsInSkippedFiles,
      rows_rejected: rowsRejected,
      null_casts: Object.fromEntries(CAST_COLUMNS.map((c) => [c.name, num(counts![`null_${c.name}`])])),
      rows_unique: rowsUnique,
      duplicates_removed: kept - rowsUnique,
      parts: opts.parts,
      seconds: 0,
      rows_in_skipped_files: rowsInSkippedFiles,
      files_not_read: notRead,
    };
    db.close();

    // 6. Publish (output-folder.ts): _SUCCESS out, the files of the earlier run this one does not
    //    replace deleted, new ones renamed in, then the summary and _SUCCESS last.
    summary.seconds = Math.round((Date.now() - started) / 10) / 100;
    await publishOutput(claim, outputFiles, (f) => join(staging, f), () => summary);
    phase('publish');
    log.info(`time per phase: ${timings.join(', ')}`);
    return summary;
  } catch (err) {
    try {
      closeOthers();
      db.close();
    } catch {
      // already closed
    }
    throw err;
  }
}

/** Paths in rejects are shown relative to the input folder when it is one. */
function displayPath(path: string, input: string): string {
  if (/[*?]/.test(input)) return path;
  const rel = relative(input, path);
  return rel === '' ? path : rel;
}

function copySql(query: string, path: string): string {
  return `COPY (${query}) TO ${sqlString(path)} (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE ${ROW_GROUP_SIZE})`;
}

async function copyParquet(db: Db, query: string, path: string): Promise<void> {
  await db.run(copySql(query, path));
}

/**
 * Runs task(worker, i) for i = 0 .. count-1, `workers` at a time, worker w using connection w.
 * After a failure no new task starts and the running ones finish before the error is thrown, so
 * the database is never closed under a running query.
 */
async function eachOnConnections(workers: number, count: number, task: (worker: number, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  let failure: unknown;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (!failed && next < count) {
        try {
          await task(w, next++);
        } catch (err) {
          if (!failed) failure = err;
          failed = true;
        }
      }
    }),
  );
  if (failed) throw failure;
}

/** node-api runs each query on a libuv pool thread; the pool has 4 unless UV_THREADPOOL_SIZE says more. */
const MAX_CONCURRENT_QUERIES = Math.max(1, Number(process.env.UV_THREADPOOL_SIZE) || 4);
