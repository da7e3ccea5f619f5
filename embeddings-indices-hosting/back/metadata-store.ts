// Metadata by index id, read from disk at query time (never loaded whole): id i is row i of the
// parquet files under <index-folder>/metadata taken in sorted path order, as clip-retrieval's
// providers number them. Memory does not grow with the row count (clip-retrieval's default
// provider loads every row into pandas: its issue #256).
// Two ways to read a row:
//  - a row file (default): one streaming pass at first start writes <index-folder>/metadata-rows/
//    (rows.bin: each row as a JSON object; offsets.bin: n+1 little-endian uint64 byte offsets;
//    meta.json: the parquet files' names, sizes and mtimes it was made from). A lookup is two
//    positioned reads per id: microseconds, whatever the row count. Rebuilt when the parquet
//    files change; written under a temporary name, then renamed.
//  - DuckDB straight over the parquet files (when the row file cannot be written, e.g. a read-only
//    folder): ids are mapped to (file, row) from the footers' row counts and only those rows are
//    asked for, but DuckDB decodes the whole row group that holds each (~10-25 ms per query).
import { existsSync, readdirSync, readFileSync as readFileSyncImpl, readSync, statSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { tempPathFor } from '../../lib/atomic-file.ts';
import type { DuckDBConnection } from '@duckdb/node-api';
import { openDb, sqlIdent, sqlString, type Db } from '../../lib/parquet.ts';

export type MetadataValue = string | number | boolean | null;
export type MetadataRow = Record<string, MetadataValue>;

interface PartFile {
  path: string;
  /** Id of the file's first row. */
  start: number;
  rows: number;
}

function listParquet(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.parquet') && !e.name.startsWith('.tmp-')) out.push(p);
    }
  };
  walk(dir);
  return out;
}

function plainValue(v: unknown): MetadataValue {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v === 'string' || typeof v === 'boolean') return v;
  if (v instanceof Date) return v.toISOString();
  if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8').replace(/\0/g, '');
  return String(v);
}

/** What the back end needs of a metadata source. */
export interface MetadataSource {
  readonly columns: string[];
  readonly rowCount: number;
  get(ids: readonly number[], columns: readonly string[]): Promise<Map<number, MetadataRow>>;
  close(): void | Promise<void>;
}

export class MetadataStore implements MetadataSource {
  /** Columns present in every file, in the first file's order. */
  readonly columns: string[];
  readonly rowCount: number;
  private readonly free: DuckDBConnection[] = [];
  private readonly waiting: Array<(c: DuckDBConnection) => void> = [];

  private constructor(
    readonly folder: string,
    private readonly db: Db,
    private readonly files: PartFile[],
    columns: string[],
    connections: DuckDBConnection[],
  ) {
    this.columns = columns;
    this.rowCount = files.reduce((s, f) => s + f.rows, 0);
    this.free.push(...connections);
  }

  /** Opens <folder> (parquet files, searched recursively); a missing folder gives an empty store. */
  static async open(folder: string, options: { connections?: number } = {}): Promise<MetadataStore> {
    const db = await openDb({ threads: 2, memoryLimit: '512MB' });
    try {
      const paths = existsSync(folder) && statSync(folder).isDirectory() ? listParquet(folder) : [];
      const files: PartFile[] = [];
      let start = 0;
      let columns: string[] | null = null;
      for (const path of paths) {
        const [meta] = await db.all<{ n: bigint | number }>(`SELECT sum(num_rows) AS n FROM parquet_file_metadata(${sqlString(path)})`);
        const rows = Number(meta?.n ?? 0);
        files.push({ path, start, rows });
        start += rows;
        const names = (await db.all<{ name: string }>(`SELECT name FROM parquet_schema(${sqlString(path)}) WHERE num_children IS NULL OR num_children = 0`)).map((r) => r.name);
        columns = columns === null ? names : columns.filter((c) => names.includes(c));
      }
      const n = Math.max(1, options.connections ?? 4);
      const connections: DuckDBConnection[] = [];
      for (let i = 0; i < n; i++) connections.push(await db.connect());
      return new MetadataStore(folder, db, files, columns ?? [], connections);
    } catch (err) {
      db.close();
      throw new Error(`cannot read the metadata under ${folder}: ${(err as Error).message.split('\n')[0]}`);
    }
  }

  private async acquire(): Promise<DuckDBConnection> {
    const c = this.free.pop();
    if (c) return c;
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(c: DuckDBConnection): void {
    const next = this.waiting.shift();
    if (next) next(c);
    else this.free.push(c);
  }

  private fileOf(id: number): PartFile | undefined {
    let lo = 0;
    let hi = this.files.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const f = this.files[mid]!;
      if (id < f.start) hi = mid - 1;
      else if (id >= f.start + f.rows) lo = mid + 1;
      else return f;
    }
    return undefined;
  }

  /**
   * The rows of `ids` restricted to `columns` (those the store lacks are left out), as a map from
   * id; ids with no row are absent from the map.
   */
  async get(ids: readonly number[], columns: readonly string[]): Promise<Map<number, MetadataRow>> {
    const out = new Map<number, MetadataRow>();
    const cols = columns.filter((c) => this.columns.includes(c));
    const byFile = new Map<PartFile, number[]>();
    for (const id of new Set(ids)) {
      if (!Number.isInteger(id) || id < 0) continue;
      const f = this.fileOf(id);
      if (!f) continue;
      const list = byFile.get(f) ?? [];
      list.push(id - f.start);
      byFile.set(f, list);
    }
    if (byFile.size === 0) return out;
    const conn = await this.acquire();
    try {
      for (const [f, rows] of byFile) {
        const select = ['file_row_number AS "__row"', ...cols.map(sqlIdent)].join(', ');
        const sql = `SELECT ${select} FROM read_parquet(${sqlString(f.path)}, file_row_number = true) WHERE file_row_number IN (${rows.join(',')})`;
        const reader = await conn.runAndReadAll(sql);
        for (const r of reader.getRowObjectsJS() as Record<string, unknown>[]) {
          const row: MetadataRow = {};
          for (const c of cols) row[c] = plainValue(r[c]);
          out.set(f.start + Number(r.__row as bigint), row);
        }
      }
    } finally {
      this.release(conn);
    }
    return out;
  }

  close(): void {
    for (const c of this.free) c.closeSync();
    this.free.length = 0;
    this.db.close();
  }

  /** The parquet files, in id order, with their row counts. */
  get parts(): ReadonlyArray<{ path: string; rows: number }> {
    return this.files;
  }

  /** Streams every row of every file, in id order. */
  async *rows(): AsyncGenerator<Record<string, unknown>[]> {
    const conn = await this.acquire();
    try {
      for (const f of this.files) {
        const result = await conn.stream(`SELECT ${this.columns.map(sqlIdent).join(', ')} FROM read_parquet(${sqlString(f.path)})`);
        for await (const rows of result.yieldRowObjectJs()) yield rows as Record<string, unknown>[];
      }
    } finally {
      this.release(conn);
    }
  }
}

const ROW_FILE_VERSION = 1;

interface RowFileMeta {
  version: number;
  rows: number;
  columns: string[];
  sources: Array<{ file: string; size: number; mtimeMs: number; rows: number }>;
}

function sourcesOf(parts: ReadonlyArray<{ path: string; rows: number }>, folder: string): RowFileMeta['sources'] {
  return parts.map((p) => {
    const st = statSync(p.path);
    return { file: p.path.slice(folder.length + 1), size: st.size, mtimeMs: Math.floor(st.mtimeMs), rows: p.rows };
  });
}

/** Rows by id from rows.bin + offsets.bin (see the top of this file). */
export class RowFileStore implements MetadataSource {
  private constructor(
    readonly columns: string[],
    readonly rowCount: number,
    private readonly offsets: FileHandle,
    private readonly data: FileHandle,
  ) {}

  static async open(dir: string): Promise<RowFileStore> {
    const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as RowFileMeta;
    return new RowFileStore(meta.columns, meta.rows, await open(join(dir, 'offsets.bin'), 'r'), await open(join(dir, 'rows.bin'), 'r'));
  }

  /** The row file's folder is current for `parquet` (same files, sizes, mtimes, columns). */
  static isCurrent(dir: string, parquet: MetadataStore): boolean {
    try {
      const meta = JSON.parse(readFileSyncUtf8(join(dir, 'meta.json'))) as RowFileMeta;
      return (
        meta.version === ROW_FILE_VERSION &&
        meta.rows === parquet.rowCount &&
        JSON.stringify(meta.columns) === JSON.stringify(parquet.columns) &&
        JSON.stringify(meta.sources) === JSON.stringify(sourcesOf(parquet.parts, parquet.folder))
      );
    } catch {
      return false;
    }
  }

  /** Writes the row file folder `dir` from the parquet store, under a temporary name first. */
  static async build(dir: string, parquet: MetadataStore, progress: (rows: number) => void = () => {}): Promise<void> {
    const tmp = tempPathFor(dir);
    await mkdir(tmp, { recursive: true });
    try {
      const data = await open(join(tmp, 'rows.bin'), 'w');
      const offsets = await open(join(tmp, 'offsets.bin'), 'w');
      try {
        let position = 0;
        let rows = 0;
        const offsetBuf: bigint[] = [0n];
        const chunks: Buffer[] = [];
        let pending = 0;
        const flush = async (): Promise<void> => {
          if (chunks.length) await data.write(Buffer.concat(chunks));
          chunks.length = 0;
          pending = 0;
          if (offsetBuf.length) await offsets.write(Buffer.from(BigUint64Array.from(offsetBuf).buffer));
          offsetBuf.length = 0;
        };
        for await (const batch of parquet.rows()) {
          for (const r of batch) {
            const row: MetadataRow = {};
            for (const c of parquet.columns) row[c] = plainValue(r[c]);
            const bytes = Buffer.from(JSON.stringify(row), 'utf8');
            chunks.push(bytes);
            pending += bytes.length;
            position += bytes.length;
            offsetBuf.push(BigInt(position));
            rows++;
          }
          if (pending > 4 << 20) {
            await flush();
            progress(rows);
          }
        }
        await flush();
        await data.sync();
        await offsets.sync();
        if (rows !== parquet.rowCount) throw new Error(`read ${rows} rows, the footers say ${parquet.rowCount}`);
      } finally {
        await data.close();
        await offsets.close();
      }
      const meta: RowFileMeta = { version: ROW_FILE_VERSION, rows: parquet.rowCount, columns: parquet.columns, sources: sourcesOf(parquet.parts, parquet.folder) };
      await writeFileUtf8(join(tmp, 'meta.json'), JSON.stringify(meta, null, 1));
      const old = join(dirname(dir), `.tmp-old-${basename(dir)}-${process.pid}`);
      if (existsSync(dir)) await rename(dir, old);
      await rename(tmp, dir);
      await rm(old, { recursive: true, force: true });
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Positioned reads done synchronously: two small reads per id from the page cache cost a few
   * microseconds each, far less than a round trip through libuv's pool, where they would queue
   * behind faiss searches and model runs.
   */
  async get(ids: readonly number[], columns: readonly string[]): Promise<Map<number, MetadataRow>> {
    const out = new Map<number, MetadataRow>();
    const cols = columns.filter((c) => this.columns.includes(c));
    const o = Buffer.alloc(16);
    for (const id of new Set(ids)) {
      if (!Number.isInteger(id) || id < 0 || id >= this.rowCount) continue;
      readSync(this.offsets.fd, o, 0, 16, id * 8);
      const start = Number(o.readBigUInt64LE(0));
      const end = Number(o.readBigUInt64LE(8));
      const buf = Buffer.allocUnsafe(end - start);
      readSync(this.data.fd, buf, 0, buf.length, start);
      const all = JSON.parse(buf.toString('utf8')) as MetadataRow;
      const row: MetadataRow = {};
      for (const c of cols) row[c] = all[c] ?? null;
      out.set(id, row);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.offsets.close();
    await this.data.close();
  }
}

function readFileSyncUtf8(path: string): string {
  return readFileSyncImpl(path, 'utf8');
}

async function writeFileUtf8(path: string, text: string): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The metadata of an index folder: the row file (built or rebuilt when needed) or, when it cannot
 * be written, DuckDB over the parquet files.
 */
export async function openMetadata(indexFolder: string, opts: { rowFile: boolean; log: (m: string) => void }): Promise<MetadataSource> {
  const parquet = await MetadataStore.open(join(indexFolder, 'metadata'));
  if (!opts.rowFile || parquet.rowCount === 0) return parquet;
  const dir = join(indexFolder, 'metadata-rows');
  try {
    if (!RowFileStore.isCurrent(dir, parquet)) {
      const t = performance.now();
      opts.log(`${indexFolder}: writing the metadata row file (${parquet.rowCount} rows, once; reused while the parquet files stay the same)`);
      let last = performance.now();
      await RowFileStore.build(dir, parquet, (n) => {
        if (performance.now() - last < 5000) return;
        last = performance.now();
        opts.log(`${indexFolder}: metadata row file: ${n} / ${parquet.rowCount} rows`);
      });
      opts.log(`${indexFolder}: metadata row file written in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }
    const store = await RowFileStore.open(dir);
    parquet.close();
    return store;
  } catch (err) {
    opts.log(`${indexFolder}: no metadata row file (${(err as Error).message}); reading the parquet files through DuckDB instead`);
    return parquet;
  }
}
