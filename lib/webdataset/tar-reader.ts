// Reads webdataset tars the way webdataset 0.2's tariterators do (reference img2dataset.md 12):
// the key is the path up to the first dot of the basename, the suffix (lower-cased) the rest;
// consecutive members with the same key form one sample; entries that are not regular files,
// names without a dot and `__meta__` names are skipped; a repeated suffix is an error.
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { extract } from 'tar-stream';

export interface TarEntry {
  name: string;
  data: Buffer;
  /** Seconds since the epoch, as read (PAX mtime when present). */
  mtime: number;
  mode: number;
  uname: string;
  gname: string;
}

export interface WdsSample {
  key: string;
  /** suffix -> bytes, in tar order. */
  members: Map<string, Buffer>;
}

const SPLIT = /^((?:.*\/|)[^./]+)\.([^/]*)$/;

/** `dir/000010005.jpg` -> [`dir/000010005`, `jpg`]; null for names webdataset skips. */
export function splitMemberName(name: string): [string, string] | null {
  const m = SPLIT.exec(name);
  if (!m) return null;
  const base = m[1]!.slice(m[1]!.lastIndexOf('/') + 1);
  if (base.startsWith('__') && base.endsWith('__')) return null;
  return [m[1]!, m[2]!.toLowerCase()];
}

/** Every regular-file member with its bytes, in tar order. */
export async function* readTarEntries(input: Readable | string): AsyncGenerator<TarEntry> {
  const source = typeof input === 'string' ? createReadStream(input) : input;
  const ex = extract();
  source.on('error', (err: Error) => ex.destroy(err));
  source.pipe(ex);
  for await (const entry of ex) {
    const h = entry.header;
    const parts: Buffer[] = [];
    for await (const chunk of entry) parts.push(chunk as Buffer);
    if (h.type !== 'file' && h.type !== 'contiguous-file') continue;
    // tar-stream keeps the PAX records on the header; its typings omit them.
    const paxMtime = (h as { pax?: Record<string, string> | null }).pax?.mtime;
    yield {
      name: h.name,
      data: Buffer.concat(parts),
      mtime: paxMtime !== undefined ? Number(paxMtime) : (h.mtime?.getTime() ?? 0) / 1000,
      mode: h.mode ?? 0,
      uname: h.uname ?? '',
      gname: h.gname ?? '',
    };
  }
}

/** Samples grouped by key, as webdataset yields them. */
export async function* readTarSamples(input: Readable | string): AsyncGenerator<WdsSample> {
  let current: WdsSample | null = null;
  for await (const e of readTarEntries(input)) {
    const split = splitMemberName(e.name);
    if (!split) continue;
    const [key, suffix] = split;
    if (current && current.key !== key) {
      yield current;
      current = null;
    }
    current ??= { key, members: new Map() };
    if (current.members.has(suffix)) throw new Error(`duplicate file name in tar: ${e.name}`);
    current.members.set(suffix, e.data);
  }
  if (current) yield current;
}
