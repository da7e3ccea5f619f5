// Shard writers: webdataset tar, files folder, parquet (metadata + image column) and dummy, plus
// the per-shard metadata parquet with every input row (failures included), in img2dataset's
// column order and types (reference 2.1, 2.4-2.6, 2.8). Everything is written under temporary
// names; shard-state.ts moves the files to their final names when the whole shard is complete.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DuckDBAppender } from '@duckdb/node-api';
import { TEMP_PREFIX, tempPathFor } from '../lib/atomic-file.ts';
import { sqlIdent, sqlString, type Db } from '../lib/parquet.ts';
import { TarWriter } from '../lib/webdataset/tar-writer.ts';
import type { DownloadConfig } from './options.ts';
import { pyJsonDumps, pyStr } from './python-text.ts';
import type { SampleStatus } from './stats.ts';

/** One processed input row, ready to be written. */
export interface SampleRecord {
  /** The row's position in its input file (joins back to the shard's input table). */
  rowNumber: number;
  key: string;
  status: SampleStatus;
  errorMessage: string | null;
  width: number | null;
  height: number | null;
  originalWidth: number | null;
  originalHeight: number | null;
  exif: string | null;
  hash: string | null;
  /** The encoded image (successes only). */
  image: Buffer | null;
  /** The `.json` dict, keys in img2dataset's order. */
  meta: Record<string, unknown>;
  /** `.txt` content, or null when captions are not written. */
  caption: string | null;
}

export interface InputColumn {
  /** Name in the shard table (after img2dataset's renames: url, caption, the hash type). */
  name: string;
  type: string;
}

export interface ShardWriterContext {
  db: Db;
  config: DownloadConfig;
  /** DuckDB table holding the shard's input rows with their `__rn`. */
  inputTable: string;
  /** Input columns in img2dataset's column_list order. */
  inputColumns: InputColumn[];
  shardName: string;
  outputFolder: string;
}

/** A finished file (or folder) under its temporary name and the name it gets on commit. */
export interface PendingFile {
  temp: string;
  final: string;
  isDir?: boolean;
}

export interface ShardWriter {
  write(rec: SampleRecord): Promise<void>;
  /** Completes every output under its temporary name. */
  finish(): Promise<PendingFile[]>;
  /** Removes the temporary outputs. */
  abort(): Promise<void>;
}

interface SampleSink {
  write(rec: SampleRecord): Promise<void>;
  finish(): Promise<PendingFile[]>;
  abort(): Promise<void>;
}

class TarSink implements SampleSink {
  private readonly temp: string;
  private readonly stream;
  private readonly tar: TarWriter;

  constructor(private readonly final: string, private readonly fmt: string) {
    this.temp = tempPathFor(final);
    this.stream = createWriteStream(this.temp);
    this.tar = new TarWriter(this.stream);
  }

  async write(rec: SampleRecord): Promise<void> {
    const members: Record<string, Uint8Array | string> = { [this.fmt]: rec.image!, json: pyJsonDumps(rec.meta, 4) };
    if (rec.caption !== null) members.txt = rec.caption;
    await this.tar.writeSample({ key: rec.key, members });
  }

  async finish(): Promise<PendingFile[]> {
    await this.tar.end();
    return [{ temp: this.temp, final: this.final }];
  }

  async abort(): Promise<void> {
    this.stream.destroy();
    await rm(this.temp, { force: true });
  }
}

class FilesSink implements SampleSink {
  private readonly temp: string;
  private made: Promise<unknown>;

  constructor(private readonly final: string, private readonly fmt: string, outputFolder: string, shardName: string) {
    this.temp = join(outputFolder, `${TEMP_PREFIX}${randomBytes(4).toString('hex')}-${shardName}`);
    // The folder exists even when every sample fails, as in img2dataset.
    this.made = mkdir(this.temp, { recursive: true });
  }

  async write(rec: SampleRecord): Promise<void> {
    await this.made;
    await writeFile(join(this.temp, `${rec.key}.${this.fmt}`), rec.image!);
    if (rec.caption !== null) await writeFile(join(this.temp, `${rec.key}.txt`), rec.caption);
    await writeFile(join(this.temp, `${rec.key}.json`), pyJsonDumps(rec.meta, 4));
  }

  async finish(): Promise<PendingFile[]> {
    await this.made;
    return [{ temp: this.temp, final: this.final, isDir: true }];
  }

  async abort(): Promise<void> {
    await rm(this.temp, { recursive: true, force: true });
  }
}

let tableSeq = 0;

/** Rows per part file when images are stored, as img2dataset's parquet writer flushes. */
const IMAGE_ROWS_PER_PART = 100;

/**
 * The per-row results joined with the input rows into the shard parquet. Without images the
 * results (small) wait in a DuckDB table until the shard ends and are written in one go; with
 * images (`--output-format parquet`) every 100 rows go out to a part file under a temporary
 * name, merged at the end, so a shard's images are never all in memory at once.
 */
class MetadataParquet {
  private table = '';
  private appender: DuckDBAppender | null = null;
  private seq = 0;
  private rowsInTable = 0;
  private readonly parts: string[] = [];
  private readonly temp: string;

  constructor(private readonly ctx: ShardWriterContext, private readonly final: string, private readonly withImage: boolean) {
    this.temp = tempPathFor(final);
  }

  async open(): Promise<void> {
    this.table = `res_${process.pid}_${++tableSeq}`;
    this.rowsInTable = 0;
    await this.ctx.db.run(
      `CREATE TABLE ${this.table} (seq INTEGER, rn BIGINT, key VARCHAR, status VARCHAR, error_message VARCHAR,
       width INTEGER, height INTEGER, original_width INTEGER, original_height INTEGER, exif VARCHAR, hash VARCHAR, img BLOB)`,
    );
    this.appender = await this.ctx.db.connection.createAppender(this.table);
  }

  async add(rec: SampleRecord): Promise<void> {
    const a = this.appender!;
    const int = (v: number | null): void => (v === null ? a.appendNull() : a.appendInteger(v));
    const str = (v: string | null): void => (v === null ? a.appendNull() : a.appendVarchar(v));
    a.appendInteger(this.seq++);
    a.appendBigInt(BigInt(rec.rowNumber));
    str(rec.key);
    str(rec.status);
    str(rec.errorMessage);
    int(rec.width);
    int(rec.height);
    int(rec.originalWidth);
    int(rec.originalHeight);
    str(rec.exif);
    str(rec.hash);
    if (this.withImage && rec.image) a.appendBlob(rec.image);
    else a.appendNull();
    a.endRow();
    if (this.withImage && ++this.rowsInTable >= IMAGE_ROWS_PER_PART) {
      const part = `${this.temp}.part-${String(this.parts.length).padStart(6, '0')}`;
      this.parts.push(part);
      await this.writeTable(part);
      await this.open();
    }
  }

  /** The shard parquet's rows (input columns joined with the results) of the current table. */
  private query(): string {
    const { config, inputColumns, inputTable } = this.ctx;
    const hashName = config.computeHash;
    const cols: string[] = inputColumns.map((c) =>
      // With --verify-hash the input's hash column keeps its place and gets the computed value.
      hashName !== null && c.name === hashName ? `r.hash AS ${sqlIdent(c.name)}` : `i.${sqlIdent(c.name)}`,
    );
    cols.push('r.key', 'r.status', 'r.error_message', 'r.width', 'r.height', 'r.original_width', 'r.original_height');
    if (config.extractExif) cols.push('r.exif');
    if (hashName !== null && !inputColumns.some((c) => c.name === hashName)) cols.push(`r.hash AS ${sqlIdent(hashName)}`);
    if (this.withImage) cols.push(`r.img AS ${sqlIdent(config.encodeFormat)}`);
    return `SELECT ${cols.join(', ')} FROM ${this.table} r JOIN ${inputTable} i ON i.__rn = r.rn ORDER BY r.seq`;
  }

  /** Writes the current table to `path` and drops it. */
  private async writeTable(path: string): Promise<void> {
    this.appender?.closeSync();
    this.appender = null;
    await this.ctx.db.run(`COPY (${this.query()}) TO ${sqlString(path)} (FORMAT parquet, COMPRESSION snappy)`);
    await this.ctx.db.run(`DROP TABLE ${this.table}`);
  }

  async finish(): Promise<PendingFile[]> {
    if (this.parts.length === 0) {
      await this.writeTable(this.temp);
    } else {
      if (this.rowsInTable > 0) {
        const part = `${this.temp}.part-${String(this.parts.length).padStart(6, '0')}`;
        this.parts.push(part);
        await this.writeTable(part);
      } else {
        this.appender?.closeSync();
        this.appender = null;
        await this.ctx.db.run(`DROP TABLE ${this.table}`);
      }
      // Parts in order, streamed: a file list scans file after file, rows in file order.
      const list = `[${this.parts.map(sqlString).join(', ')}]`;
      await this.ctx.db.run(
        `COPY (SELECT * FROM read_parquet(${list})) TO ${sqlString(this.temp)} (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE ${IMAGE_ROWS_PER_PART})`,
      );
      await this.removeParts();
    }
    return [{ temp: this.temp, final: this.final }];
  }

  private async removeParts(): Promise<void> {
    for (const p of this.parts.splice(0)) await rm(p, { force: true });
  }

  async abort(): Promise<void> {
    try {
      this.appender?.closeSync();
    } catch {
      // already closed
    }
    this.appender = null;
    if (this.table) await this.ctx.db.run(`DROP TABLE IF EXISTS ${this.table}`);
    await this.removeParts();
    await rm(this.temp, { force: true });
  }
}

/** The writer for one shard in the configured output format. */
export async function createShardWriter(ctx: ShardWriterContext): Promise<ShardWriter> {
  const { config, outputFolder, shardName } = ctx;
  const fmt = config.encodeFormat;
  let sink: SampleSink | null = null;
  if (config.outputFormat === 'webdataset') sink = new TarSink(join(outputFolder, `${shardName}.tar`), fmt);
  else if (config.outputFormat === 'files') sink = new FilesSink(join(outputFolder, shardName), fmt, outputFolder, shardName);
  let meta: MetadataParquet | null = null;
  if (config.outputFormat !== 'dummy') {
    meta = new MetadataParquet(ctx, join(outputFolder, `${shardName}.parquet`), config.outputFormat === 'parquet');
    await meta.open();
  }
  // One write at a time, in completion order.
  let chain: Promise<void> = Promise.resolve();
  return {
    write(rec) {
      const next = chain.then(async () => {
        await meta?.add(rec);
        if (rec.status === 'success' && sink) await sink.write(rec);
      });
      chain = next.catch(() => {});
      return next;
    },
    async finish() {
      await chain;
      const files: PendingFile[] = [];
      if (sink) files.push(...(await sink.finish()));
      if (meta) files.push(...(await meta.finish()));
      return files;
    },
    async abort() {
      await chain;
      await sink?.abort();
      await meta?.abort();
    },
  };
}
