// indices_paths.json -> the served indices: per name, its faiss image/text indices (memory-mapped
// on request), its metadata store and its CLIP model (one model loaded once however many indices
// name it). Both forms of the file are read: {"name": "folder"} and {"name": {"indice_folder": ...,
// per-index options}}. A per-index option overrides the command line; an absent one takes the
// command line's value (clip-retrieval instead carries the previous entry's values over, an
// accident of its loader that we do not copy).
import { existsSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { readIndex, type NativeIndex } from '../../lib/faiss/index.ts';
import { isAlive } from '../../lib/output-lock.ts';
import type { ModelDtype } from '../inference/clip-model.ts';
import { QueryEncoder } from './encoder.ts';
import { openMetadata, type MetadataSource } from './metadata-store.ts';
import type { SearchThreads } from './search-threads.ts';

export const DEFAULT_COLUMNS = ['url', 'image_path', 'caption', 'NSFW'];

/** The per-index settings (clip-retrieval's names). */
export interface IndexSettings {
  indice_folder: string;
  clip_model: string | null;
  enable_faiss_memory_mapping: boolean;
  columns_to_return: string[];
}

/** Keys clip-retrieval accepts whose features this back end does not have: accepted and reported. */
const ACCEPTED_UNUSED = ['enable_hdf5', 'reorder_metadata_by_ivf_index', 'enable_mclip_option', 'use_jit', 'use_arrow', 'provide_safety_model', 'provide_violence_detector', 'provide_aesthetic_embeddings'];

export class IndicesConfigError extends Error {}

/** Reads and checks indices_paths.json; relative folders are taken from the file's own folder. */
export function readIndicesPaths(path: string, defaults: Omit<IndexSettings, 'indice_folder'>): { settings: Map<string, IndexSettings>; notes: string[] } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new IndicesConfigError(`${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : `not valid JSON (${(err as Error).message})`}; it maps index names to folders, e.g. {"my_index": "/data/index_folder"}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new IndicesConfigError(`${path}: expected a JSON object mapping index names to folders`);
  const base = dirname(resolve(path));
  const abs = (p: string): string => (isAbsolute(p) ? p : join(base, p));
  const settings = new Map<string, IndexSettings>();
  const notes: string[] = [];
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof value === 'string') {
      settings.set(name, { ...defaults, indice_folder: abs(value) });
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new IndicesConfigError(`${path}: index ${name}: expected a folder string or an object with indice_folder, got ${JSON.stringify(value)}`);
    const o = value as Record<string, unknown>;
    if (typeof o.indice_folder !== 'string') throw new IndicesConfigError(`${path}: index ${name}: indice_folder must be a string`);
    const s: IndexSettings = { ...defaults, indice_folder: abs(o.indice_folder) };
    for (const [k, v] of Object.entries(o)) {
      if (k === 'indice_folder') continue;
      if (k === 'clip_model') {
        if (typeof v !== 'string') throw new IndicesConfigError(`${path}: index ${name}: clip_model must be a model folder path`);
        s.clip_model = abs(v);
      } else if (k === 'enable_faiss_memory_mapping') {
        if (typeof v !== 'boolean') throw new IndicesConfigError(`${path}: index ${name}: ${k} must be true or false`);
        s.enable_faiss_memory_mapping = v;
      } else if (k === 'columns_to_return') {
        if (!Array.isArray(v) || !v.every((c) => typeof c === 'string')) throw new IndicesConfigError(`${path}: index ${name}: columns_to_return must be a list of column names`);
        s.columns_to_return = v as string[];
      } else if (ACCEPTED_UNUSED.includes(k)) {
        if (v) notes.push(`index ${name}: ${k}=${JSON.stringify(v)} accepted but has no effect here (see the README)`);
      } else {
        throw new IndicesConfigError(`${path}: index ${name}: unknown option ${k}`);
      }
    }
    settings.set(name, s);
  }
  if (settings.size === 0) throw new IndicesConfigError(`${path}: no index listed`);
  return { settings, notes };
}

export interface ServedIndex {
  name: string;
  settings: IndexSettings;
  image: NativeIndex | null;
  text: NativeIndex | null;
  metadata: MetadataSource;
  encoder: QueryEncoder | null;
  /** columns_to_return that the metadata has. */
  columns: string[];
  dim: number;
}

/** Opens every index; the first name is the default index. */
export async function openIndices(settings: Map<string, IndexSettings>, opts: { threads: number; dtype?: ModelDtype; searchThreads: SearchThreads; rowFile: boolean; sq8Copy?: boolean; log: (m: string) => void }): Promise<Map<string, ServedIndex>> {
  const encoders = new Map<string, Promise<QueryEncoder>>();
  const out = new Map<string, ServedIndex>();
  try {
    for (const [name, s] of settings) {
      if (!existsSync(s.indice_folder)) throw new IndicesConfigError(`index ${name}: folder ${s.indice_folder} does not exist`);
      const t = performance.now();
      const open = async (file: string): Promise<NativeIndex | null> => {
        const p = join(s.indice_folder, file);
        if (!existsSync(p)) return null;
        const index = await readIndex(p, { mmap: s.enable_faiss_memory_mapping });
        const infos = join(s.indice_folder, file.replace(/\.index$/, '.json'));
        // The tuned search parameters (nprobe, efSearch) written by `run.ts index`.
        if (existsSync(infos)) {
          const param = (JSON.parse(readFileSync(infos, 'utf8')) as { index_param?: unknown }).index_param;
          if (typeof param === 'string' && param.trim()) index.setParameters(param);
        }
        opts.searchThreads.enableSplitting(index);
        if (opts.sq8Copy !== false && typeof index.attachSq8Copy === 'function') await attachSq8(name, index, p, opts.log);
        return index;
      };
      const image = await open('image.index');
      const text = await open('text.index');
      if (!image && !text) throw new IndicesConfigError(`index ${name}: ${s.indice_folder} has neither image.index nor text.index`);
      const metadata = await openMetadata(s.indice_folder, { rowFile: opts.rowFile, log: opts.log });
      let encoder: QueryEncoder | null = null;
      if (s.clip_model) {
        let p = encoders.get(s.clip_model);
        if (!p) encoders.set(s.clip_model, (p = QueryEncoder.open(s.clip_model, opts.threads, opts.dtype)));
        encoder = await p;
      }
      const dim = (image ?? text)!.d;
      if (image && text && image.d !== text.d) throw new IndicesConfigError(`index ${name}: image.index has ${image.d} dimensions and text.index ${text.d}`);
      if (encoder && encoder.dim !== dim) throw new IndicesConfigError(`index ${name}: the model ${s.clip_model} gives ${encoder.dim} dimensions, the index has ${dim}`);
      const served: ServedIndex = { name, settings: s, image, text, metadata, encoder, columns: s.columns_to_return.filter((c) => metadata.columns.includes(c)), dim };
      out.set(name, served);
      opts.log(
        `index ${name}: ${s.indice_folder}: image ${image ? `${image.ntotal} vectors` : 'none'}, text ${text ? `${text.ntotal} vectors` : 'none'}, ${dim} dims, ` +
          `metadata ${metadata.rowCount} rows (${served.columns.join(', ') || 'no columns'} returned, ${metadata.constructor.name === 'RowFileStore' ? 'row file' : 'DuckDB over parquet'}), model ${s.clip_model ? `${s.clip_model}${opts.dtype && opts.dtype !== 'fp32' ? ` (${opts.dtype})` : ''}` : 'none (embedding_input only)'}, ` +
          `${s.enable_faiss_memory_mapping ? 'memory-mapped' : 'in memory'}, opened in ${((performance.now() - t) / 1000).toFixed(2)} s`,
      );
      if ((image && metadata.rowCount !== image.ntotal) || (!image && text && metadata.rowCount !== text.ntotal)) {
        opts.log(`index ${name}: warning: metadata has ${metadata.rowCount} rows but the index ${(image ?? text)!.ntotal} vectors`);
      }
    }
  } catch (err) {
    closeIndices(out);
    throw err;
  }
  return out;
}

/**
 * The 8-bit scan copy of an inner-product IVF-SQfp16 index (the addon's attachSq8Copy), kept beside
 * it as <name>.sq8 and written at the first start (like metadata-rows/). Same results, about half
 * the bytes per scan; a copy that cannot be written leaves the index as it was, with a line saying why.
 */
async function attachSq8(name: string, index: NativeIndex, indexPath: string, log: (m: string) => void): Promise<void> {
  const copy = indexPath.replace(/\.index$/, '.sq8');
  removeOrphanedTemps(copy);
  const t = performance.now();
  try {
    const status = await index.attachSq8Copy(copy, indexPath);
    if (status === 'built') log(`index ${name}: wrote the 8-bit scan copy ${copy} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    else if (status === 'attached') log(`index ${name}: 8-bit scan copy ${copy}`);
  } catch (err) {
    log(`index ${name}: warning: no 8-bit scan copy (${(err as Error).message.split('\n')[0]}); searching the float16 lists alone, same results, slower (pass --sq8-copy False to silence)`);
  }
}

/**
 * `<copy>.tmp-<pid>` files left by a writer that was killed: removed when no process here has that
 * pid and the file has not changed for 10 minutes (a writer on another machine sharing the folder
 * has another pid space but keeps writing).
 */
function removeOrphanedTemps(copy: string): void {
  const prefix = `${basename(copy)}.tmp-`;
  let names: string[];
  try {
    names = readdirSync(dirname(copy)).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(name.slice(prefix.length));
    if (!Number.isInteger(pid) || pid <= 0 || isAlive(pid)) continue;
    try {
      const path = join(dirname(copy), name);
      if (Date.now() - statSync(path).mtimeMs > 10 * 60_000) unlinkSync(path);
    } catch {
      // gone already, or not ours to remove: the build does not depend on it
    }
  }
}

export function closeIndices(indices: Map<string, ServedIndex>): void {
  for (const s of indices.values()) {
    void s.metadata.close();
    s.image?.dispose();
    s.text?.dispose();
  }
}
