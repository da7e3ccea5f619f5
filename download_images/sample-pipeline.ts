// One shard, start to finish (reference 2.4, 4): for every input row download -> verify hash ->
// resize -> EXIF -> compute hash -> metadata dict -> writer, with --thread-count rows in flight.
// A row holds its slot until its sample is written, so a slow disk or a busy resizer slows the
// downloads instead of piling images up in memory; resizing runs a few at a time (libuv's pool).
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb, sqlIdent, sqlString, type Db } from '../lib/parquet.ts';
import { errorMessage, log } from '../lib/log.ts';
import type { DownloadOutcome } from './downloader.ts';
import type { DownloadConfig } from './options.ts';
import { columnList, sampleKey, shardName } from './reader.ts';
import type { ResizeResult } from './resizer.ts';
import { commitShard } from './shard-state.ts';
import { ShardStats, type SampleStatus, type ShardStatsJson } from './stats.ts';
import { PyFloat, pyStr } from './python-text.ts';
import { createShardWriter, type InputColumn, type SampleRecord } from './writers.ts';


/** The per-sample steps, injectable so the shard logic can be tested on its own. */
export interface SampleDeps {
  download(url: string): Promise<DownloadOutcome>;
  resize(input: Buffer, bboxes?: number[][]): Promise<ResizeResult>;
  exif(input: Buffer): Promise<string>;
  close?(): Promise<void>;
}

export interface ShardTask {
  shardId: number;
  /** Folder of the shard's parquet parts. */
  path: string;
}

export interface ShardRunOptions {
  config: DownloadConfig;
  deps: SampleDeps;
  /** Absolute output folder. */
  outputFolder: string;
  /** Resizes in flight (default: libuv's pool size). */
  resizeConcurrency?: number;
  onSample?: (success: boolean, bytes: number) => void;
}

class Semaphore {
  private waiting: Array<() => void> = [];
  constructor(private free: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((r) => this.waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}

const FLOAT_TYPES = new Set(['DOUBLE', 'FLOAT', 'REAL']);

/** DuckDB JS value -> the value Python would hold, so the `.json` prints like img2dataset's. */
function toPy(v: unknown, type: string): unknown {
  if (v === null || v === undefined) return null;
  if (FLOAT_TYPES.has(type) && typeof v === 'number') return new PyFloat(v);
  const list = /^(.*)\[\d*\]$/.exec(type);
  if (list && Array.isArray(v)) return v.map((x) => toPy(x, list[1]!));
  return v;
}

function toBoxes(v: unknown): number[][] | undefined {
  if (!Array.isArray(v)) return undefined;
  return v.filter(Array.isArray).map((b: unknown[]) => b.map(Number));
}

const PAGE = 2048;

/** The shard's input rows in file order, a page at a time. */
async function* shardRows(db: Db, table: string): AsyncGenerator<Record<string, unknown>> {
  const [range] = await db.all<{ lo: bigint | null; hi: bigint | null }>(`SELECT min(__rn) lo, max(__rn) hi FROM ${table}`);
  if (!range || range.lo === null || range.hi === null) return;
  for (let lo = Number(range.lo); lo <= Number(range.hi); lo += PAGE) {
    const rows = await db.all(`SELECT * FROM ${table} WHERE __rn >= ${lo} AND __rn < ${lo + PAGE} ORDER BY __rn`);
    yield* rows;
  }
}

/**
 * Downloads one shard and commits its files. Returns the stats written to `<shard>_stats.json`.
 * Throws (leaving nothing under final names) if the shard as a whole fails.
 */
export async function processShard(task: ShardTask, o: ShardRunOptions): Promise<ShardStatsJson> {
  // A DuckDB instance per shard: one kept for a worker's life held on to 10-20 MB more after each of
  // its first shards (memory that neither duckdb_memory() reported nor malloc_trim gave back), so a
  // long run peaked higher than a short one. Opening one costs a few milliseconds. A shard's rows
  // are small; the cap bounds its buffer pool.
  const db = await openDb({
    threads: 1,
    memoryLimit: '256MB',
    tempDirectory: join(tmpdir(), `cah-prepro-duckdb-${process.pid}-${task.shardId}`),
  });
  try {
    return await runShard(task, o, db);
  } finally {
    db.close();
  }
}

async function runShard(task: ShardTask, o: ShardRunOptions, db: Db): Promise<ShardStatsJson> {
  const { config, deps, outputFolder } = o;
  const stats = new ShardStats();
  const name = shardName(task.shardId, config.oomShardCount);
  const table = `in_${process.pid}_${task.shardId}`;
  await db.run(`CREATE OR REPLACE TABLE ${table} AS SELECT * FROM read_parquet(${sqlString(`${task.path}/*.parquet`)})`);
  try {
    const described = await db.all<{ column_name: string; column_type: string }>(`DESCRIBE ${table}`);
    const types = new Map(described.map((d) => [d.column_name, d.column_type]));
    const order = columnList({ ...config, inputFormat: config.inputFormat });
    const inputColumns: InputColumn[] = order.map((c) => ({ name: c, type: types.get(c) ?? 'VARCHAR' }));
    const verify = config.verifyHash;
    const metaColumns = inputColumns.filter((c) => !(verify && c.name === verify.hash));
    const writer = await createShardWriter({ db, config, inputTable: table, inputColumns, shardName: name, outputFolder });
    const resizeSlots = new Semaphore(o.resizeConcurrency ?? Math.max(2, Number(process.env.UV_THREADPOOL_SIZE ?? 4)));
    const hashOf = (b: Buffer, algo: string): string => createHash(algo).update(b).digest('hex');
    const txtInput = config.inputFormat.startsWith('txt');

    const handle = async (row: Record<string, unknown>, index: number): Promise<SampleRecord> => {
      const key = sampleKey(task.shardId, index, config.numberSamplePerShard, config.oomShardCount);
      let status: SampleStatus = 'success';
      let error: string | null = null;
      let r: ResizeResult | null = null;
      let exif: string | null = null;
      let hash: string | null = null;
      const dl = await deps.download(row.url === null || row.url === undefined ? '' : String(row.url));
      if (!dl.ok) {
        status = 'failed_to_download';
        error = dl.error;
      } else if (verify && hashOf(dl.bytes, verify.hash) !== row[verify.hash]) {
        status = 'failed_to_download';
        error = 'hash mismatch';
      } else {
        const bytes = dl.bytes;
        const boxes = config.bboxCol !== null ? toBoxes(row[config.bboxCol]) : undefined;
        r = await resizeSlots.run(() => deps.resize(bytes, boxes));
        if (r.error !== null || r.image === null) {
          status = 'failed_to_resize';
          error = r.error ?? 'resize produced no image';
          r = null;
        } else {
          if (config.extractExif) {
            try {
              exif = await deps.exif(bytes);
            } catch {
              exif = null;
            }
          }
          if (config.computeHash !== null) hash = hashOf(bytes, config.computeHash);
        }
      }
      const ok = status === 'success';
      const dims = ok && !config.disableAllReencoding && r !== null;
      const meta: Record<string, unknown> = {};
      for (const c of metaColumns) meta[c.name] = toPy(row[c.name], c.type);
      Object.assign(meta, {
        key,
        status,
        error_message: error,
        width: dims ? r!.width : null,
        height: dims ? r!.height : null,
        original_width: dims ? r!.originalWidth : null,
        original_height: dims ? r!.originalHeight : null,
      });
      if (config.extractExif) meta.exif = exif;
      if (config.computeHash !== null) meta[config.computeHash] = hash;
      return {
        rowNumber: Number(row.__rn),
        key,
        status,
        errorMessage: error,
        width: meta.width as number | null,
        height: meta.height as number | null,
        originalWidth: meta.original_width as number | null,
        originalHeight: meta.original_height as number | null,
        exif,
        hash,
        image: ok ? r!.image : null,
        meta,
        caption: config.captionCol === null ? null : txtInput ? '' : pyStr(toPy(row.caption, types.get('caption') ?? 'VARCHAR')),
      };
    };

    try {
      const rows = shardRows(db, table);
      let index = 0;
      let failure: unknown = null;
      const next = async (): Promise<{ row: Record<string, unknown>; index: number } | null> => {
        const n = await rows.next();
        return n.done ? null : { row: n.value, index: index++ };
      };
      // Row pulls are serialised so indexes follow input order.
      let pulling: Promise<unknown> = Promise.resolve();
      const pull = (): Promise<{ row: Record<string, unknown>; index: number } | null> => {
        const p = pulling.then(next);
        pulling = p.catch(() => {});
        return p;
      };
      const slot = async (): Promise<void> => {
        for (;;) {
          if (failure) return;
          const item = await pull();
          if (!item) return;
          stats.row();
          let rec: SampleRecord;
          try {
            rec = await handle(item.row, item.index);
          } catch (err) {
            // As img2dataset: a row whose processing throws is counted but leaves no sample.
            log.warn(`Sample ${item.index} failed to download: ${errorMessage(err)}`);
            continue;
          }
          stats.add(rec.status, rec.errorMessage);
          await writer.write(rec);
          o.onSample?.(rec.status === 'success', rec.image?.length ?? 0);
        }
      };
      const slots = Array.from({ length: Math.max(1, config.threadCount) }, () =>
        slot().catch((err: unknown) => {
          failure ??= err;
        }),
      );
      await Promise.all(slots);
      if (failure) throw failure;
      const files = await writer.finish();
      const result = stats.finish();
      await commitShard(outputFolder, name, files, result);
      return result;
    } catch (err) {
      await writer.abort().catch(() => {});
      throw err;
    }
  } finally {
    await db.run(`DROP TABLE IF EXISTS ${sqlIdent(table)}`);
  }
}

/** Removes a shard's input parts once it is done (img2dataset deletes the feather file). */
export async function removeShardInput(task: ShardTask): Promise<void> {
  await rm(task.path, { recursive: true, force: true });
}
