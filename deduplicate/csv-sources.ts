// Finding the crawling@home CSVs, reading each one's header, and turning DuckDB's reject byte
// offsets back into physical line numbers (DuckDB counts records, so a caption with an embedded
// newline shifts every later line it reports).
import { createReadStream, type Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';

export interface CsvSource {
  path: string;
  bytes: number;
  gzip: boolean;
}

const CSV_NAME = /\.csv(\.gz)?$/i;

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      // `**/` matches zero or more folders
      re += glob[i + 2] === '/' ? '(?:.*/)?' : '.*';
      i += glob[i + 2] === '/' ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

async function* walk(dir: string): AsyncGenerator<string> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw new Error(`cannot list ${dir}: ${(err as Error).message}`);
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = join(dir, e.name);
    // Our own output folders (_tmp, _rejects) never hold inputs.
    if (e.isDirectory() && !e.name.startsWith('_')) yield* walk(p);
    else if (e.isFile()) yield p;
  }
}

/**
 * Every `*.csv` / `*.csv.gz` below a folder, or matching a glob (`*`, `**`, `?`), or the one file
 * named; sorted by path, which is the order "first occurrence" refers to.
 */
export async function discoverCsvFiles(input: string): Promise<CsvSource[]> {
  const globAt = input.search(/[*?]/);
  let root = input;
  let match: (p: string) => boolean = (p) => CSV_NAME.test(p);
  if (globAt >= 0) {
    const slash = input.lastIndexOf('/', globAt);
    root = slash >= 0 ? input.slice(0, slash) || '/' : '.';
    const re = globToRegExp(input.split(sep).join('/'));
    match = (p) => re.test(p.split(sep).join('/')) || re.test(`./${p.split(sep).join('/')}`);
  }
  const info = await stat(root).catch(() => null);
  if (!info) throw new Error(`input ${root} does not exist; pass a folder of CSV files or a glob`);
  const paths: string[] = [];
  if (info.isFile()) paths.push(root);
  else for await (const p of walk(root)) if (match(p)) paths.push(p);
  paths.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const out: CsvSource[] = [];
  for (const path of paths) {
    const s = await stat(path);
    out.push({ path, bytes: s.size, gzip: /\.gz$/i.test(path) });
  }
  return out;
}

function openText(src: CsvSource): Readable {
  const raw = createReadStream(src.path);
  if (!src.gzip) return raw;
  const gunzip = createGunzip();
  raw.on('error', (err) => gunzip.destroy(err));
  return raw.pipe(gunzip);
}

/** Splits one CSV line in pandas' dialect (quote `"`, doubled quotes inside). */
export function splitCsvLine(line: string, delimiter: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') quoted = true;
    else if (line.startsWith(delimiter, i)) {
      out.push(cur);
      cur = '';
      i += delimiter.length - 1;
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** A header, or why the file is skipped whole: `skip` counts it, `detail` and `advice` go to the user. */
export type HeaderResult = { columns: string[] } | { skip: string; detail: string; advice: string };

const MAX_HEADER_BYTES = 1 << 20;

/** Reads only the first line of a file (gunzipping just enough of a .gz). */
export async function readHeader(src: CsvSource, delimiter: string): Promise<HeaderResult> {
  const stream = openText(src);
  const chunks: Buffer[] = [];
  let size = 0;
  let line: string | undefined;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const nl = chunk.indexOf(10);
      if (nl >= 0) {
        chunks.push(chunk.subarray(0, nl));
        line = Buffer.concat(chunks).toString('utf8');
        break;
      }
      chunks.push(chunk);
      size += chunk.length;
      if (size > MAX_HEADER_BYTES) break;
    }
  } catch (err) {
    const detail = (err as Error).message.split('\n')[0]!;
    if (src.gzip) return { skip: 'damaged gzip', detail, advice: 're-download it (gzip -t checks a file)' };
    return { skip: 'unreadable', detail: `read error: ${detail}`, advice: 'check the file and its permissions' };
  } finally {
    stream.destroy();
  }
  const complete = line !== undefined;
  const bytes = complete ? Buffer.from(line!, 'utf8') : Buffer.concat(chunks);
  if (!src.gzip && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    return { skip: 'gzip data in a .csv file', detail: 'it starts with the gzip signature', advice: 'rename it to .csv.gz and rerun' };
  }
  // A NUL never occurs in a UTF-8 CSV header: this is UTF-16 text or not text at all. Its name
  // would also break the SQL the header becomes.
  if (bytes.includes(0)) {
    return { skip: 'binary or UTF-16 file', detail: 'NUL byte in the header line', advice: 'convert it to UTF-8 (iconv -f UTF-16 -t UTF-8) or move it out of --input' };
  }
  line ??= bytes.toString('utf8');
  if (/\r(?!\n)./s.test(line)) {
    return { skip: 'CR-only line endings', detail: 'lines end in a bare CR (classic Mac text)', advice: "convert them to LF (tr '\\r' '\\n') and rerun" };
  }
  if (!complete && size > MAX_HEADER_BYTES) {
    return { skip: 'header line longer than 1 MiB', detail: 'no line break in its first MiB', advice: 'check that it is a CSV file' };
  }
  line = line.replace(/^\uFEFF/, '').replace(/\r$/, '');
  if (line.trim() === '') return { skip: 'empty file', detail: 'empty file', advice: 'remove it or download it again' };
  const columns = splitCsvLine(line, delimiter).map((c) => c.trim());
  if (new Set(columns).size !== columns.length) {
    return { skip: 'duplicate column names in header', detail: `header ${JSON.stringify(line.slice(0, 200))}`, advice: `check --delimiter ${JSON.stringify(delimiter)} and the header line` };
  }
  return { columns };
}

/**
 * Why a gzip file cannot be read to its end (truncated, corrupt, junk after the data), or null when
 * it is intact. Streams the whole file through zlib: DuckDB reads a truncated gzip up to the break
 * and says nothing, so its missing rows would go unnoticed.
 */
export async function gzipDamage(src: CsvSource): Promise<string | null> {
  try {
    for await (const chunk of openText(src) as AsyncIterable<Buffer>) void chunk;
    return null;
  } catch (err) {
    return (err as Error).message.split('\n')[0]!;
  }
}

/**
 * 1-based physical line numbers of the given byte offsets (offsets into the decompressed text),
 * counting every `\n` before each offset. One pass over the file for all offsets.
 */
export async function lineNumbersAt(src: CsvSource, offsets: readonly bigint[]): Promise<Map<bigint, number>> {
  const wanted = [...new Set(offsets)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const result = new Map<bigint, number>();
  let next = 0;
  let pos = 0n;
  let lines = 1;
  const stream = openText(src);
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const end = pos + BigInt(chunk.length);
      while (next < wanted.length && wanted[next]! < end) {
        const upto = Number(wanted[next]! - pos);
        let n = lines;
        for (let i = chunk.indexOf(10); i >= 0 && i < upto; i = chunk.indexOf(10, i + 1)) n++;
        result.set(wanted[next]!, n);
        next++;
      }
      if (next >= wanted.length) break;
      for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
      pos = end;
    }
  } finally {
    stream.destroy();
  }
  for (; next < wanted.length; next++) result.set(wanted[next]!, lines);
  return result;
}
