// One partition's outputs in clip-retrieval's layout (reference/clip-retrieval.md 1.4):
//   img_emb/img_emb_{P}.npy, text_emb/text_emb_{P}.npy   float16 [n, D], rows L2-normalised
//   metadata/metadata_{P}.parquet                        image_path, caption, then the json fields
// Row k of the three is the same sample. Embeddings stream to their files as batches finish;
// metadata rows wait in a DuckDB table (spilling to disk past its memory limit) and are copied to
// parquet at the end. Every file is written under a temporary name and renamed when complete,
// metadata last: a partition is finished exactly when its metadata file exists (with its npy files),
// so a rerun, also after kill -9, skips finished partitions and redoes the others from scratch.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TEMP_PREFIX } from '../../lib/atomic-file.ts';
import { copyToParquet, openDb, sqlIdent, sqlString, type Db } from '../../lib/parquet.ts';
import type { Sample } from './sources.ts';

/** An embedding file being written (lib/npy.ts's NpyWriter, float16): rows in, final name on close. */
export interface RowFile {
  append(values: Float32Array): Promise<void>;
  close(): Promise<void>;
  abort(): Promise<void>;
}
export type OpenRowFile = (path: string, cols: number) => Promise<RowFile>;

export interface PartitionPaths {
  image: string;
  text: string;
  metadata: string;
}

export function partitionPaths(outputFolder: string, name: string): PartitionPaths {
  return {
    image: join(outputFolder, 'img_emb', `img_emb_${name}.npy`),
    text: join(outputFolder, 'text_emb', `text_emb_${name}.npy`),
    metadata: join(outputFolder, 'metadata', `metadata_${name}.parquet`),
  };
}

export interface WriterOptions {
  enableImage: boolean;
  enableText: boolean;
  enableMetadata: boolean;
}

export function isPartitionDone(paths: PartitionPaths, o: WriterOptions): boolean {
  return existsSync(paths.metadata) && (!o.enableImage || existsSync(paths.image)) && (!o.enableText || existsSync(paths.text));
}

/** Removes what a killed run left under temporary names for this partition. */
export function removeLeftovers(paths: PartitionPaths): void {
  for (const p of [paths.image, paths.text, paths.metadata]) {
    const dir = join(p, '..');
    const base = p.slice(dir.length + 1);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) if (f.startsWith(TEMP_PREFIX) && f.includes(base)) rmSync(join(dir, f), { force: true, recursive: true });
  }
}

// Keys clip-retrieval drops from the json before adding its columns.
const RESERVED = new Set(['caption', 'metadata', 'image_path']);

type ColType = 'BOOLEAN' | 'BIGINT' | 'DOUBLE' | 'VARCHAR';

function typeOf(v: unknown): ColType | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'boolean') return 'BOOLEAN';
  if (typeof v === 'bigint') return 'BIGINT';
  if (typeof v === 'number') return Number.isInteger(v) ? 'BIGINT' : 'DOUBLE';
  return 'VARCHAR';
}

/** The narrowest type that holds both (integers widen to doubles, anything else to text). */
function widen(a: ColType | undefined, b: ColType): ColType {
  if (!a || a === b) return b;
  if ((a === 'BIGINT' && b === 'DOUBLE') || (a === 'DOUBLE' && b === 'BIGINT')) return 'DOUBLE';
  return 'VARCHAR';
}

function jsonValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Date) return v.toISOString();
  return v;
}

let tableSeq = 0;

export class PartitionWriter {
  private image: RowFile | null = null;
  private text: RowFile | null = null;
  private readonly columns = new Map<string, ColType>();
  private table = '';
  private appender: Awaited<ReturnType<Db['connection']['createAppender']>> | null = null;
  private rowCount = 0;

  private constructor(
    private readonly paths: PartitionPaths,
    private readonly o: WriterOptions,
    private readonly db: Db,
  ) {}

  static async open(paths: PartitionPaths, o: WriterOptions, dim: { image: number; text: number }, openRowFile: OpenRowFile, tempDirectory: string): Promise<PartitionWriter> {
    removeLeftovers(paths);
    await mkdir(join(paths.metadata, '..'), { recursive: true });
    const db = await openDb({ threads: 1, memoryLimit: '256MB', tempDirectory });
    const w = new PartitionWriter(paths, o, db);
    w.table = `meta_${process.pid}_${++tableSeq}`;
    await db.run(`CREATE TABLE ${w.table} (row_id BIGINT, image_path VARCHAR, caption VARCHAR, meta JSON)`);
    w.appender = await db.connection.createAppender(w.table);
    if (o.enableImage) w.image = await openRowFile(paths.image, dim.image);
    if (o.enableText) w.text = await openRowFile(paths.text, dim.text);
    return w;
  }

  get rows(): number {
    return this.rowCount;
  }

  /** One batch: samples with their normalised embeddings (n x D each, row k = samples[k]). */
  async add(samples: readonly Sample[], imageEmb: Float32Array | null, textEmb: Float32Array | null): Promise<void> {
    if (this.image && imageEmb) await this.image.append(imageEmb);
    if (this.text && textEmb) await this.text.append(textEmb);
    const a = this.appender!;
    for (const s of samples) {
      a.appendBigInt(BigInt(this.rowCount++));
      a.appendVarchar(s.imagePath);
      if (s.caption === null) a.appendNull();
      else a.appendVarchar(s.caption);
      if (this.o.enableMetadata && s.meta) {
        const kept: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(s.meta)) {
          if (RESERVED.has(k)) continue;
          const t = typeOf(v);
          if (!this.columns.has(k)) this.columns.set(k, t ?? ('NULL' as ColType));
          if (t) this.columns.set(k, this.columns.get(k) === ('NULL' as ColType) ? t : widen(this.columns.get(k), t));
          kept[k] = jsonValue(v);
        }
        a.appendVarchar(JSON.stringify(kept));
      } else a.appendNull();
      a.endRow();
    }
  }

  /** Embedding files first, metadata last (the partition's completion mark). */
  async finish(): Promise<void> {
    try {
      this.appender!.closeSync();
      this.appender = null;
      await this.image?.close();
      await this.text?.close();
      const cols: string[] = [];
      if (this.o.enableImage) cols.push('image_path');
      if (this.o.enableText) cols.push('caption');
      for (const [name, type] of this.columns) {
        const path = sqlString(`$."${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`);
        const t = type === ('NULL' as ColType) ? 'VARCHAR' : type;
        const value = t === 'VARCHAR' ? `json_extract_string(meta, ${path})` : `CAST(json_extract_string(meta, ${path}) AS ${t})`;
        cols.push(`${value} AS ${sqlIdent(name)}`);
      }
      if (cols.length === 0) cols.push('image_path');
      await copyToParquet(this.db, `SELECT ${cols.join(', ')} FROM ${this.table} ORDER BY row_id`, this.paths.metadata);
    } finally {
      this.db.close();
    }
  }

  /** Drops everything of this partition written so far (nothing reaches a final name). */
  async abort(): Promise<void> {
    try {
      this.appender?.closeSync();
    } catch {
      // already closed
    }
    await this.image?.abort();
    await this.text?.abort();
    this.db.close();
  }
}
