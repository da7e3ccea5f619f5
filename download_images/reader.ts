// Input lists -> shards, as img2dataset's Reader cuts them (reference 5): each input file on its
// own into ceil(rows / N) shards, shard ids running on across files in sorted file order, the
// columns renamed to url / caption / <hash type> and kept in img2dataset's column_list order.
//
// DuckDB streams each file once into `_tmp/<shard id>/` parquet parts (the counterpart of
// img2dataset's `_tmp/<id>.feather`), so a 100M-row list never sits in memory; a row keeps its
// position in the file as `__rn`, which fixes the sample key and the order inside the shard.
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { sqlIdent, sqlString, type Db } from '../lib/parquet.ts';
import type { DownloadConfig } from './options.ts';
import { cleanTextList, MAX_RECORD_BYTES, type RejectedLine, type TextFormat } from './text-list.ts';

export interface ReaderOptions {
  urlList: string;
  inputFormat: DownloadConfig['inputFormat'];
  urlCol: string;
  captionCol: string | null;
  /** Includes the bbox column, as img2dataset appends it. */
  saveAdditionalColumns: string[];
  verifyHash: DownloadConfig['verifyHash'];
  numberSamplePerShard: number;
  /** Where shard parts go (`<output>/_tmp`). */
  tmpDir: string;
  /** First shard id (0, or one past the last in extend mode). */
  startShardId?: number;
  /** Shards already finished: counted in the numbering, not written. */
  doneShards?: ReadonlySet<number>;
  /** A txt/csv/tsv line that could not be read (not UTF-8, over 1 MiB, an unclosed quote...). */
  onReject?: (file: string, r: RejectedLine) => void;
}

export interface InputShard {
  shardId: number;
  /** Folder of parquet parts holding the shard's rows (with `__rn`). */
  path: string;
  rows: number;
  /** The input file it came from. */
  source: string;
}

export class ReaderError extends Error {}

/** Column names of a shard in img2dataset's column_list order. */
export function columnList(o: Pick<ReaderOptions, 'inputFormat' | 'captionCol' | 'saveAdditionalColumns' | 'verifyHash'>): string[] {
  if (o.inputFormat.startsWith('txt')) return ['url'];
  const cols = [...o.saveAdditionalColumns];
  if (o.captionCol !== null) cols.push('caption');
  if (o.verifyHash) cols.push(o.verifyHash.hash);
  cols.push('url');
  return cols;
}

/** A file, or every `*.<input_format>` file directly in a folder, sorted. */
export async function listInputFiles(urlList: string, inputFormat: string): Promise<string[]> {
  const path = resolve(urlList);
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch {
    throw new ReaderError(`No file found at path ${path} with extension ${inputFormat}`);
  }
  if (!isDir) return [path];
  const names = (await readdir(path, { withFileTypes: true }))
    .filter((e) => e.isFile() && e.name.endsWith(`.${inputFormat}`))
    .map((e) => e.name)
    .sort();
  if (names.length === 0) throw new ReaderError(`No file found at path ${path} with extension ${inputFormat}`);
  return names.map((n) => join(path, n));
}

/** The DuckDB table function reading one input file. */
function source(file: string, format: string): string {
  const f = sqlString(file);
  const base = format.replace(/\.gz$/, '');
  const compression = format.endsWith('.gz') ? ", compression='gzip'" : '';
  switch (base) {
    case 'txt':
      // One URL per line. img2dataset parses txt as a one-column CSV, so a comma in a URL aborts
      // the whole file; here the whole line is the URL.
      return `(SELECT url FROM read_csv(${f}, header=false, columns={'url': 'VARCHAR'}, delim=chr(1), quote='', escape='', auto_detect=false${compression}) WHERE url IS NOT NULL AND trim(url) <> '')`;
    case 'clean-csv':
      // Written by cleanTextList: LF lines, UTF-8, RFC 4180 quoting; a record at most twice the cap.
      return `read_csv(${f}, header=true, delim=',', quote='"', escape='"', new_line='\\n', max_line_size=${4 * MAX_RECORD_BYTES})`;
    case 'csv':
      return `read_csv(${f}, header=true, delim=',', quote='"'${compression})`;
    case 'tsv':
      return `read_csv(${f}, header=true, delim='\\t', quote='"'${compression})`;
    case 'json':
      return `read_json(${f}, format='auto'${compression})`;
    case 'jsonl':
      return `read_json(${f}, format='newline_delimited'${compression})`;
    case 'parquet':
      return `read_parquet(${f})`;
  }
  throw new ReaderError(`Unknown input format ${format}`);
}

/** `SELECT` list renaming input columns to img2dataset's names. */
function projection(o: ReaderOptions, available: string[]): string {
  if (o.inputFormat.startsWith('txt')) return 'url';
  const wanted: Array<[string, string]> = o.saveAdditionalColumns.map((c) => [c, c]);
  if (o.captionCol !== null) wanted.push([o.captionCol, 'caption']);
  if (o.verifyHash) wanted.push([o.verifyHash.column, o.verifyHash.hash]);
  wanted.push([o.urlCol, 'url']);
  const missing = wanted.filter(([c]) => !available.includes(c)).map(([c]) => c);
  if (missing.length) throw new ReaderError(`column(s) ${missing.join(', ')} not found; the input has ${available.join(', ')}`);
  return wanted.map(([c, as]) => `${sqlIdent(c)} AS ${sqlIdent(as)}`).join(', ');
}

/**
 * Cuts every input file into shards and yields them in ascending id, file by file. Done shards
 * are numbered but not yielded.
 */
export async function* readShards(db: Db, o: ReaderOptions, files?: string[]): AsyncGenerator<InputShard> {
  const inputs = files ?? (await listInputFiles(o.urlList, o.inputFormat));
  const n = o.numberSamplePerShard;
  let start = o.startShardId ?? 0;
  await mkdir(o.tmpDir, { recursive: true });
  for (const [k, file] of inputs.entries()) {
    let src: string;
    const base = o.inputFormat.replace(/\.gz$/, '');
    const cleanPath = join(o.tmpDir, `.list-${process.pid}-${k}.${base}`);
    if (base === 'txt' || base === 'csv' || base === 'tsv') {
      // Our line reader first: an odd line is rejected by number instead of failing the file.
      await cleanTextList(file, base as TextFormat, o.inputFormat.endsWith('.gz'), cleanPath, (r) => o.onReject?.(file, r));
      src = source(cleanPath, base === 'txt' ? 'txt' : 'clean-csv');
    } else src = source(file, o.inputFormat);
    const described = await db.all<{ column_name: string }>(`DESCRIBE SELECT * FROM ${src}`);
    const proj = projection(o, described.map((d) => d.column_name));
    const partDir = join(o.tmpDir, `.parts-${process.pid}-${k}`);
    await rm(partDir, { recursive: true, force: true });
    // row_number() OVER () with no ORDER BY keeps the scan order (DuckDB's streaming window).
    const res = await db.all<{ Count: bigint | number }>(
      `COPY (SELECT *, __rn // ${n} AS __shard FROM (SELECT ${proj}, row_number() OVER () - 1 AS __rn FROM ${src}))
       TO ${sqlString(partDir)} (FORMAT parquet, PARTITION_BY (__shard), OVERWRITE_OR_IGNORE, WRITE_PARTITION_COLUMNS false)`,
    );
    const rows = Number(res[0]?.Count ?? 0);
    const shards = Math.ceil(rows / n);
    for (let j = 0; j < shards; j++) {
      const id = start + j;
      const from = join(partDir, `__shard=${j}`);
      if (o.doneShards?.has(id)) {
        await rm(from, { recursive: true, force: true });
        continue;
      }
      const to = join(o.tmpDir, String(id));
      await rm(to, { recursive: true, force: true });
      await rename(from, to);
      yield { shardId: id, path: to, rows: Math.min(n, rows - j * n), source: file };
    }
    await rm(partDir, { recursive: true, force: true });
    await rm(cleanPath, { force: true });
    start += shards;
  }
}

/** The width of the in-shard part of a key: ceil(log10(N)). */
export function sampleDigits(numberSamplePerShard: number): number {
  // Exact for powers of ten, where floating-point log10 could land a hair above the integer.
  let d = 0;
  while (10 ** d < numberSamplePerShard) d++;
  return d;
}

/** img2dataset's sample key: shard_id * 10^digits + index, zero-padded to digits + oom_shard_count. */
export function sampleKey(shardId: number, index: number, numberSamplePerShard: number, oomShardCount: number): string {
  const digits = sampleDigits(numberSamplePerShard);
  const key = BigInt(shardId) * 10n ** BigInt(digits) + BigInt(index);
  return key.toString().padStart(digits + oomShardCount, '0');
}

/** `"{shard_id:0{oom_shard_count}d}"`: a minimum width, wider ids are not cut. */
export function shardName(shardId: number, oomShardCount: number): string {
  return String(shardId).padStart(oomShardCount, '0');
}
