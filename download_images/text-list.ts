// txt / csv / tsv URL lists read line by line by our own reader, so that one odd line costs that
// line and not the run (issue 16, item 5). DuckDB's CSV reader stops the whole file at a CRLF line
// among LF lines, a line that is not UTF-8, a line over its 2 MB limit or an unterminated quote,
// and names no line. Here each such line is rejected with its number, and the good rows are
// rewritten as a clean file (LF, UTF-8, RFC 4180 quoting) that DuckDB then reads as before.
//
// Memory is bounded: a line longer than MAX_RECORD_BYTES is skipped without being held, and a
// quoted field that never closes is given up after MAX_RECORD_BYTES, its lines read again as rows.
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { createGunzip } from 'node:zlib';

/** Longest record (one line, or the lines of one quoted multi-line field) kept, in bytes. */
export const MAX_RECORD_BYTES = 1024 * 1024;

export type TextFormat = 'txt' | 'csv' | 'tsv';

export interface RejectedLine {
  /** 1-based line number in the (decompressed) file. */
  line: number;
  reason: string;
}

export interface TextListResult {
  /** Data rows written (the header not counted). */
  rows: number;
  rejected: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Physical lines of a file, `\n`-split, a trailing `\r` dropped; over-long lines come as null. */
async function* physicalLines(file: string, gzip: boolean): AsyncGenerator<{ n: number; text: string | null; reason?: string }> {
  const raw = createReadStream(file);
  const input = gzip ? raw.pipe(createGunzip()) : raw;
  raw.on('error', (err) => input.destroy(err));
  let parts: Buffer[] = [];
  let size = 0;
  let tooLong = false;
  let n = 0;
  const decode = (buf: Buffer): { n: number; text: string | null; reason?: string } => {
    n++;
    if (tooLong) return { n, text: null, reason: `is over ${MAX_RECORD_BYTES} bytes` };
    let end = buf.length;
    if (end > 0 && buf[end - 1] === 0x0d) end--;
    let start = 0;
    if (n === 1 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) start = 3; // UTF-8 BOM
    try {
      return { n, text: utf8.decode(buf.subarray(start, end)) };
    } catch {
      return { n, text: null, reason: 'is not UTF-8' };
    }
  };
  const chunks = (input as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  for (;;) {
    let chunk: Buffer;
    try {
      const next = await chunks.next();
      if (next.done) break;
      chunk = next.value;
    } catch (err) {
      // A damaged gzip or a read error: the lines read so far stand, the loss is reported.
      yield { n: n + 1, text: null, reason: `cannot be read: ${(err as Error).message}; the rest of the file is lost` };
      return;
    }
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl >= 0; nl = chunk.indexOf(0x0a, from)) {
      const piece = chunk.subarray(from, nl);
      const line = tooLong ? piece : size === 0 ? piece : Buffer.concat([...parts, piece]);
      if (!tooLong && size + piece.length > MAX_RECORD_BYTES) tooLong = true;
      yield decode(line);
      parts = [];
      size = 0;
      tooLong = false;
      from = nl + 1;
    }
    if (from < chunk.length) {
      const rest = chunk.subarray(from);
      if (!tooLong) {
        size += rest.length;
        if (size > MAX_RECORD_BYTES) {
          tooLong = true;
          parts = [];
        } else parts.push(Buffer.from(rest));
      }
    }
  }
  if (size > 0 || tooLong) yield decode(Buffer.concat(parts));
}

/** RFC 4180 quoting for the clean file: quoted when it holds a delimiter, quote or line break. */
function csvField(v: string | null): string {
  if (v === null || v === '') return '';
  return /[",\n\r]/.test(v) || v.trim() !== v ? `"${v.replace(/"/g, '""')}"` : v;
}

/** One record being assembled from physical lines (a quoted field may span several). */
interface Pending {
  start: number;
  lines: Array<{ n: number; text: string }>;
  bytes: number;
  fields: string[];
  field: string;
  inQuotes: boolean;
  fieldStart: boolean;
}

/**
 * Reads `file` (txt, csv or tsv, maybe gzipped) and writes its good rows to `outPath` as clean
 * text (txt: one URL a line; csv/tsv: comma-separated CSV with the header). Every odd line goes to
 * `onReject` with its number and reason.
 */
export async function cleanTextList(
  file: string,
  format: TextFormat,
  gzip: boolean,
  outPath: string,
  onReject: (r: RejectedLine) => void,
): Promise<TextListResult> {
  const out = createWriteStream(outPath);
  const result: TextListResult = { rows: 0, rejected: 0 };
  const reject = (line: number, reason: string): void => {
    result.rejected++;
    onReject({ line, reason });
  };
  let buffered: string[] = [];
  let bufferedBytes = 0;
  const write = async (s: string): Promise<void> => {
    buffered.push(s);
    bufferedBytes += s.length;
    if (bufferedBytes >= 1 << 20) await flush(out);
  };
  const flush = async (w: WriteStream): Promise<void> => {
    if (buffered.length === 0) return;
    const data = buffered.join('');
    buffered = [];
    bufferedBytes = 0;
    if (!w.write(data)) await once(w, 'drain');
  };
  const closed = new Promise<void>((resolve, reject) => {
    out.on('close', resolve);
    out.on('error', reject);
  });

  try {
    if (format === 'txt') {
      for await (const { n, text, reason } of physicalLines(file, gzip)) {
        if (text === null) {
          reject(n, reason!);
          continue;
        }
        if (text.trim() === '') continue;
        // The clean txt is read with chr(1) as its delimiter; no URL holds such a byte.
        if (/[\x00\x01\r]/.test(text)) {
          reject(n, 'holds a control character (NUL, \\x01 or a lone CR)');
          continue;
        }
        await write(`${text}\n`);
        result.rows++;
      }
    } else {
      await readDelimited(file, format === 'tsv' ? '\t' : ',', gzip, write, reject, () => result.rows++);
    }
    await flush(out);
  } finally {
    out.end();
    await closed;
  }
  return result;
}

async function readDelimited(
  file: string,
  delim: string,
  gzip: boolean,
  write: (s: string) => Promise<void>,
  reject: (line: number, reason: string) => void,
  counted: () => void,
): Promise<void> {
  let header: string[] | null = null;
  let pending: Pending | null = null;
  // Lines to read again after a record was given up (its quote never closed).
  const replay: Array<{ n: number; text: string }> = [];

  const emit = async (p: Pending): Promise<void> => {
    const fields = p.fields;
    if (header === null) {
      // pandas' names for repeated columns: a, a.1, a.2
      const seen = new Map<string, number>();
      header = fields.map((f) => {
        const k = seen.get(f) ?? 0;
        seen.set(f, k + 1);
        return k === 0 ? f : `${f}.${k}`;
      });
      await write(header.map(csvField).join(',') + '\n');
      return;
    }
    if (fields.length > header.length) {
      reject(p.start, `has ${fields.length} fields, the header has ${header.length}`);
      return;
    }
    while (fields.length < header.length) fields.push(''); // missing trailing fields are empty, as pandas reads them
    await write(fields.map(csvField).join(',') + '\n');
    counted();
  };

  /** Feeds one physical line; returns when the record it completes (if any) is written. */
  const feed = async (n: number, text: string): Promise<void> => {
    let p = pending;
    if (p === null) {
      if (text.trim() === '') return; // blank lines are skipped, as pandas does
      // Fast path: a line without quotes is a whole record.
      if (!text.includes('"')) {
        await emit({ start: n, lines: [], bytes: 0, fields: text.split(delim), field: '', inQuotes: false, fieldStart: true });
        return;
      }
      p = { start: n, lines: [], bytes: 0, fields: [], field: '', inQuotes: false, fieldStart: true };
    }
    p.lines.push({ n, text });
    p.bytes += Buffer.byteLength(text) + 1;
    for (let i = 0; i < text.length; i++) {
      const c = text[i]!;
      if (p.inQuotes) {
        if (c === '"') {
          if (text[i + 1] === '"') {
            p.field += '"';
            i++;
          } else {
            p.inQuotes = false;
            // A quote that closes on a later line and is followed by text (not a delimiter or
            // the line's end) is another field's opening quote: the first one never closed.
            if (p.lines.length > 1 && i + 1 < text.length && text[i + 1] !== delim) {
              giveUp(p);
              return;
            }
          }
        } else p.field += c;
      } else if (c === delim) {
        p.fields.push(p.field);
        p.field = '';
        p.fieldStart = true;
      } else if (c === '"' && p.fieldStart) {
        p.inQuotes = true;
        p.fieldStart = false;
      } else {
        p.field += c;
        p.fieldStart = false;
      }
    }
    if (p.inQuotes) {
      if (p.bytes > MAX_RECORD_BYTES) giveUp(p);
      else {
        p.field += '\n';
        pending = p;
      }
      return;
    }
    p.fields.push(p.field);
    pending = null;
    await emit(p);
  };

  /** A quote that does not close: reject the line it opened on, read the lines after it again. */
  const giveUp = (p: Pending): void => {
    pending = null;
    reject(p.start, 'opens a quoted field that never closes');
    replay.unshift(...p.lines.slice(1));
  };

  const drain = async (): Promise<void> => {
    while (replay.length > 0) {
      const { n, text } = replay.shift()!;
      await feed(n, text);
    }
  };

  for await (const { n, text, reason } of physicalLines(file, gzip)) {
    if (text === null) {
      // An unreadable line inside a quoted field ends that record too.
      if (pending !== null) giveUp(pending);
      await drain();
      reject(n, reason!);
      continue;
    }
    await feed(n, text);
    await drain();
  }
  while (pending !== null) {
    giveUp(pending);
    await drain();
  }
}
