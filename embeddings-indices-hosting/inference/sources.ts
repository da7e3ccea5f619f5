// Where samples come from: webdataset tars (a folder, one tar, a brace pattern), img2dataset's
// files layout (image + .txt + .json per key), and the parquet shards `download_images
// --output_format parquet` writes (image bytes in a column). Each source lists its elements (tars,
// keys or parquet files) and splits them over partitions as clip-retrieval does: element i goes to
// partition i % N, so a partition's samples are known before reading it and a rerun reads the same.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, isAbsolute, join, relative, sep } from 'node:path';
import { openDb, sqlIdent, sqlString, type Db } from '../../lib/parquet.ts';
import { readTarSamples } from '../../lib/webdataset/tar-reader.ts';

export type InputFormat = 'webdataset' | 'files' | 'parquet';

export interface Sample {
  /** image_path in the metadata: the webdataset / parquet key, the image file's path in files mode. */
  imagePath: string;
  image: Buffer | null;
  caption: string | null;
  /** The sample's json fields (files / webdataset) or the parquet row's other columns. */
  meta: Record<string, unknown> | null;
  /** Where it was read from, for the log: `tar: key`, a file path, `parquet row n (key)`. */
  where: string;
}

/** A sample that cannot be used, with why: counted and named in the log, never fatal. */
export interface Skipped {
  skipped: string;
  where: string;
}

export interface SourceOptions {
  enableImage: boolean;
  enableText: boolean;
  enableMetadata: boolean;
  wdsImageKey: string;
  wdsCaptionKey: string;
  /** Samples per tar assumed when counting partitions (clip-retrieval's wds_number_file_per_input_file). */
  wdsNumberFilePerInputFile: number;
  /**
   * Folder that relative input paths are read from (default: the working directory). A BullMQ
   * worker reads them from the coordinator's working directory, while the names that reach the
   * outputs (files mode's image_path) stay as the user wrote them.
   */
  readRoot?: string;
}

/** Where a path as given is read from. */
function readPath(o: SourceOptions, p: string): string {
  return o.readRoot && !isAbsolute(p) ? join(o.readRoot, p) : p;
}

export interface Source {
  format: InputFormat;
  /** Tars, sample keys or parquet files, in the order that assigns partitions. */
  elements: string[];
  /** Estimated samples, for partition counting and the ETA. */
  estimatedSamples: number;
  /** The samples of the elements given (those of one partition), in order. */
  read(elements: readonly string[]): AsyncGenerator<Sample | Skipped>;
}

export class SourceError extends Error {}

// ---- Brace patterns, as python's braceexpand: {a,b,c} and zero-padded numeric ranges {000..150}.

export function expandBraces(pattern: string): string[] {
  const m = /\{([^{}]*)\}/.exec(pattern);
  if (!m) return [pattern];
  const head = pattern.slice(0, m.index);
  const tail = pattern.slice(m.index + m[0].length);
  const body = m[1]!;
  let options: string[];
  const range = /^(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?$/.exec(body);
  if (range) {
    const [a, b] = [Number(range[1]), Number(range[2])];
    const step = Number(range[3] ?? 1) || 1;
    const width = range[1]!.length === range[2]!.length || range[1]!.startsWith('0') || range[2]!.startsWith('0') ? Math.max(range[1]!.length, range[2]!.length) : 0;
    options = [];
    for (let v = a; a <= b ? v <= b : v >= b; v += a <= b ? step : -step) options.push(String(v).padStart(width, '0'));
  } else if (body.includes(',')) {
    options = body.split(',');
  } else {
    return expandBraces(head + '\u0000' + body + '\u0001' + tail).map((s) => s.replace('\u0000', '{').replace('\u0001', '}'));
  }
  return options.flatMap((o) => expandBraces(head + o + tail));
}

/** Files under dir whose names end with one of exts (lower-cased), relative POSIX paths, sorted. */
function listFiles(dir: string, exts: readonly string[]): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (exts.includes(extname(e.name).slice(1))) out.push(relative(dir, p).split(sep).join('/'));
    }
  };
  walk(dir);
  return out.sort();
}

/** The inputs of --input-dataset (plus any further paths a shell's brace expansion produced). */
function inputPaths(inputs: readonly string[], exts: readonly string[], o: SourceOptions): string[] {
  const paths: string[] = [];
  for (const input of inputs) {
    for (const p of expandBraces(input)) {
      const at = readPath(o, p);
      if (!existsSync(at)) throw new SourceError(`--input-dataset: ${p} does not exist`);
      if (statSync(at).isDirectory()) paths.push(...listFiles(at, exts).map((f) => join(p, f)));
      else paths.push(p);
    }
  }
  if (paths.length === 0) throw new SourceError(`--input-dataset: no ${exts.map((e) => `.${e}`).join(' / ')} files in ${inputs.join(' ')}`);
  return paths;
}

/** A json sidecar as flat fields (nested keys joined with `.`, as pandas json_normalize). */
export function flattenJson(value: unknown, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) {
      const name = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === 'object' && !Array.isArray(v)) flattenJson(v, name, out);
      else out[name] = v;
    }
  }
  return out;
}

function parseJsonMeta(bytes: Buffer, where: string): Record<string, unknown> | Skipped {
  try {
    return flattenJson(JSON.parse(bytes.toString('utf8')));
  } catch (err) {
    return { skipped: `json does not parse (${(err as Error).message})`, where };
  }
}

// ---- webdataset

function webdatasetSource(inputs: readonly string[], o: SourceOptions): Source {
  const tars = inputPaths(inputs, ['tar'], o);
  return {
    format: 'webdataset',
    elements: tars,
    estimatedSamples: tars.length * o.wdsNumberFilePerInputFile,
    async *read(elements) {
      for (const tar of elements) {
        try {
          for await (const s of readTarSamples(readPath(o, tar))) {
            const where = `${tar}: ${s.key}`;
            const image = s.members.get(o.wdsImageKey) ?? null;
            const caption = s.members.get(o.wdsCaptionKey) ?? null;
            const json = s.members.get('json') ?? null;
            // As webdataset's filter in clip-retrieval: a sample lacking an enabled member is left out.
            if (o.enableImage && !image) yield { skipped: `no .${o.wdsImageKey} member`, where };
            else if (o.enableText && !caption) yield { skipped: `no .${o.wdsCaptionKey} member`, where };
            else if (o.enableMetadata && !json) yield { skipped: 'no .json member', where };
            else {
              const meta = o.enableMetadata ? parseJsonMeta(json!, where) : null;
              if (meta && 'skipped' in meta) yield meta as Skipped;
              else yield { imagePath: s.key.slice(s.key.lastIndexOf('/') + 1), where, image, caption: caption?.toString('utf8') ?? null, meta: meta as Record<string, unknown> | null };
            }
          }
        } catch (err) {
          // A truncated or corrupt tar: what was read counts; the rest of the tar is reported.
          yield { skipped: `tar unreadable from here on (${(err as Error).message})`, where: tar };
        }
      }
    },
  };
}

// ---- files: img2dataset's files layout, keyed by relative path without extension.

const IMAGE_EXTS = ['png', 'jpg', 'jpeg', 'bmp', 'webp', 'PNG', 'JPG', 'JPEG', 'BMP', 'WEBP'];

function filesSource(inputs: readonly string[], o: SourceOptions): Source {
  if (inputs.length !== 1) throw new SourceError(`--input-dataset: files mode takes one folder, got ${inputs.join(' ')}`);
  const dir = inputs[0]!;
  const dirAt = readPath(o, dir);
  if (!existsSync(dirAt)) throw new SourceError(`--input-dataset: ${inputs[0]} does not exist`);
  if (!statSync(dirAt).isDirectory()) throw new SourceError(`--input-dataset: ${inputs[0]} is not a folder (files mode reads img2dataset's files layout; use --input-format webdataset or parquet for a file)`);
  const stem = (p: string): string => p.slice(0, p.length - extname(p).length);
  const images = new Map(listFiles(dirAt, IMAGE_EXTS).map((p) => [stem(p), p]));
  const texts = new Set(listFiles(dirAt, ['txt']).map(stem));
  const jsons = new Set(listFiles(dirAt, ['json']).map(stem));
  const keys = [...(o.enableText ? texts : o.enableImage ? images.keys() : jsons)].sort();
  return {
    format: 'files',
    elements: keys,
    estimatedSamples: keys.length,
    async *read(elements) {
      for (const key of elements) {
        const where = join(dir, key);
        const imageRel = images.get(key);
        if (o.enableImage && !imageRel) {
          yield { skipped: 'no image file with this name', where };
          continue;
        }
        if (o.enableText && !texts.has(key)) {
          yield { skipped: 'no .txt file', where };
          continue;
        }
        if (o.enableMetadata && !jsons.has(key)) {
          yield { skipped: 'no .json file', where };
          continue;
        }
        try {
          const image = o.enableImage ? await readFile(join(dirAt, imageRel!)) : null;
          const caption = o.enableText ? await readFile(join(dirAt, `${key}.txt`), 'utf8') : null;
          const meta = o.enableMetadata ? parseJsonMeta(await readFile(join(dirAt, `${key}.json`)), `${where}.json`) : null;
          if (meta && 'skipped' in meta) yield meta as Skipped;
          else yield { imagePath: imageRel ? join(dir, imageRel) : where, where, image, caption, meta: meta as Record<string, unknown> | null };
        } catch (err) {
          yield { skipped: `unreadable (${(err as Error).message})`, where };
        }
      }
    },
  };
}

// ---- parquet with image bytes (download_images --output_format parquet)

export interface ParquetColumns {
  image: string;
  caption: string;
}

async function parquetSource(inputs: readonly string[], o: SourceOptions, cols: ParquetColumns): Promise<Source> {
  const files = inputPaths(inputs, ['parquet'], o);
  const db = await openDb({ threads: 1 });
  let total = 0;
  try {
    for (const f of files) {
      const [row] = await db.all<{ n: bigint }>(`SELECT count(*) AS n FROM read_parquet(${sqlString(readPath(o, f))})`);
      total += Number(row!.n);
      const names = (await db.all<{ column_name: string }>(`DESCRIBE SELECT * FROM read_parquet(${sqlString(readPath(o, f))})`)).map((r) => r.column_name);
      if (o.enableImage && !names.includes(cols.image)) throw new SourceError(`${f}: no image column ${cols.image} (columns: ${names.join(', ')}); pass --parquet-image-column`);
      if (o.enableText && !names.includes(cols.caption)) throw new SourceError(`${f}: no caption column ${cols.caption}; pass --parquet-caption-column`);
    }
  } finally {
    db.close();
  }
  return {
    format: 'parquet',
    elements: files,
    estimatedSamples: total,
    async *read(elements) {
      const rdb: Db = await openDb({ threads: 1, memoryLimit: '512MB' });
      try {
        for (const f of elements) {
          const hasStatus = (await rdb.all<{ column_name: string }>(`DESCRIBE SELECT * FROM read_parquet(${sqlString(readPath(o, f))})`)).some((r) => r.column_name === 'status');
          // Failed downloads are rows without an image: in img2dataset's parquet they carry status != success.
          const where = hasStatus ? ` WHERE status = 'success'` : '';
          let row = 0;
          for await (const rows of rdb.stream<Record<string, unknown>>(`SELECT * FROM read_parquet(${sqlString(readPath(o, f))})${where}`)) {
            for (const r of rows) {
              row++;
              const key = String(r.key ?? `${f}:${row}`);
              const image = r[cols.image];
              if (o.enableImage && !(image instanceof Uint8Array)) {
                yield { skipped: `no image bytes in ${cols.image}`, where: `${f} row ${row} (${key})` };
                continue;
              }
              let meta: Record<string, unknown> | null = null;
              if (o.enableMetadata) {
                meta = {};
                for (const [k, v] of Object.entries(r)) if (k !== cols.image && k !== cols.caption && !(v instanceof Uint8Array)) meta[k] = v;
              }
              const caption = r[cols.caption];
              yield {
                imagePath: key,
                where: `${f} row ${row} (${key})`,
                image: image instanceof Uint8Array ? Buffer.from(image.buffer, image.byteOffset, image.byteLength) : null,
                caption: o.enableText ? (caption === null || caption === undefined ? '' : String(caption)) : null,
                meta,
              };
            }
          }
        }
      } finally {
        rdb.close();
      }
    },
  };
}

export async function openSource(format: InputFormat, inputs: readonly string[], o: SourceOptions, parquetCols: ParquetColumns): Promise<Source> {
  if (format === 'webdataset') return webdatasetSource(inputs, o);
  if (format === 'files') return filesSource(inputs, o);
  return parquetSource(inputs, o, parquetCols);
}

/**
 * clip-retrieval's count: ceil(estimated samples / write_batch_size). With webdataset the estimate
 * is tars x --wds-number-file-per-input-file, so partitions can outnumber tars: those stay empty
 * and write nothing, as in clip-retrieval.
 */
export function partitionCount(source: Source, writeBatchSize: number): number {
  if (source.elements.length === 0 || source.estimatedSamples === 0) throw new SourceError('no sample found');
  return Math.max(1, Math.ceil(source.estimatedSamples / writeBatchSize));
}

/** Element i goes to partition i % n (clip-retrieval's striding). */
export function elementsOf(source: Source, partition: number, n: number): string[] {
  // a stride, not a filter of every element: called once per partition, a filter would make
  // planning n partitions of E elements cost n x E
  const out: string[] = [];
  if (!(partition >= 0 && partition < n)) return out; // i % n never equals it
  for (let i = partition; i < source.elements.length; i += n) out.push(source.elements[i]!);
  return out;
}

/** Zero padding width of partition ids: int(log10(n)) + 1. */
export function partitionName(partition: number, n: number): string {
  return String(partition).padStart(Math.floor(Math.log10(n)) + 1, '0');
}
