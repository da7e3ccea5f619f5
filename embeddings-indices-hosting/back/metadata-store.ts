// Metadata by index id, read from the parquet files on disk at query time (never loaded whole):
// id i is row i of the files under <index-folder>/metadata taken in sorted path order, as
// clip-retrieval's providers number them. At open, only each file's row count is read (from the
// parquet footer); a lookup maps ids to (file, row) and asks DuckDB for exactly those rows, which
// reads only the row groups that hold them. Memory therefore does not grow with the row count
// (clip-retrieval's default provider loads every row into pandas: issue #256).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
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

export class MetadataStore {
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
}
