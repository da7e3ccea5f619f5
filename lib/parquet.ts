// Parquet through DuckDB (@duckdb/node-api): an in-process database per job, streamed reads, and
// writes that land under their final name only when complete.
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { rm } from 'node:fs/promises';
import { commitFile, tempPathFor } from './atomic-file.ts';

export interface DbOptions {
  /** e.g. '2GB'; DuckDB spills to tempDirectory beyond it. */
  memoryLimit?: string;
  threads?: number;
  tempDirectory?: string;
}

export interface Db {
  connection: DuckDBConnection;
  /** Runs statements that return nothing of interest. */
  run(sql: string): Promise<void>;
  /** All rows as plain JS objects (bigint for BIGINT). Only for small results. */
  all<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  /** Rows in batches (DuckDB's vectors, about 2048 rows each), for results of any size. */
  stream<T = Record<string, unknown>>(sql: string): AsyncIterable<T[]>;
  /** Another connection to the same database, for queries that run at the same time (close it yourself). */
  connect(): Promise<DuckDBConnection>;
  close(): void;
}

/** SQL string literal. */
export function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** SQL identifier. */
export function sqlIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

export async function openDb(opts: DbOptions = {}): Promise<Db> {
  const config: Record<string, string> = {};
  if (opts.memoryLimit) config.memory_limit = opts.memoryLimit;
  if (opts.threads) config.threads = String(opts.threads);
  if (opts.tempDirectory) config.temp_directory = opts.tempDirectory;
  const instance = await DuckDBInstance.create(':memory:', config);
  const connection = await instance.connect();
  return {
    connection,
    async run(sql) {
      await connection.run(sql);
    },
    async all<T>(sql: string) {
      const reader = await connection.runAndReadAll(sql);
      return reader.getRowObjectsJS() as T[];
    },
    async *stream<T>(sql: string) {
      const result = await connection.stream(sql);
      for await (const rows of result.yieldRowObjectJs()) yield rows as T[];
    },
    connect() {
      return instance.connect();
    },
    close() {
      connection.closeSync();
      instance.closeSync();
    },
  };
}

export type ColumnType = 'VARCHAR' | 'BIGINT' | 'INTEGER' | 'DOUBLE' | 'BOOLEAN' | 'BLOB';

export interface Column {
  name: string;
  type: ColumnType;
}

/**
 * Writes rows (arrays in column order; null/undefined = NULL) to a snappy parquet file, through a
 * temporary name. For per-shard metadata and other outputs built in JS.
 */
export async function writeParquetRows(db: Db, path: string, columns: readonly Column[], rows: Iterable<readonly unknown[]>): Promise<void> {
  const table = `rows_${Math.random().toString(36).slice(2)}`;
  await db.run(`CREATE TABLE ${table} (${columns.map((c) => `${sqlIdent(c.name)} ${c.type}`).join(', ')})`);
  const tmp = tempPathFor(path);
  try {
    const appender = await db.connection.createAppender(table);
    for (const row of rows) {
      columns.forEach((c, i) => {
        const v = row[i];
        if (v === null || v === undefined) return appender.appendNull();
        switch (c.type) {
          case 'VARCHAR': return appender.appendVarchar(String(v));
          case 'BIGINT': return appender.appendBigInt(BigInt(v as number | bigint));
          case 'INTEGER': return appender.appendInteger(Number(v));
          case 'DOUBLE': return appender.appendDouble(Number(v));
          case 'BOOLEAN': return appender.appendBoolean(Boolean(v));
          case 'BLOB': return appender.appendBlob(v as Uint8Array);
        }
      });
      appender.endRow();
    }
    appender.closeSync();
    await db.run(`COPY ${table} TO ${sqlString(tmp)} (FORMAT parquet, COMPRESSION snappy)`);
    await commitFile(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  } finally {
    await db.run(`DROP TABLE IF EXISTS ${table}`);
  }
}

/** Copies a query's result to a parquet file through a temporary name. */
export async function copyToParquet(db: Db, query: string, path: string, options = 'COMPRESSION snappy'): Promise<void> {
  const tmp = tempPathFor(path);
  try {
    await db.run(`COPY (${query}) TO ${sqlString(tmp)} (FORMAT parquet, ${options})`);
    await commitFile(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
