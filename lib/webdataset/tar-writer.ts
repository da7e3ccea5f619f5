// Webdataset tar shards laid out byte for byte as webdataset 0.2's TarWriter over CPython's tarfile
// writes them (reference img2dataset.md 2.8): a PAX header carrying the float mtime before every
// member, ustar headers with mode 0444 and owner `bigdata`, members of a sample in sorted suffix
// order, two zero blocks and padding to a 10240-byte record at the end.
//
// The headers are built here rather than with tar-stream's pack: tar-stream always writes a
// `path=` PAX record under the name `PaxHeader`, and cannot emit the `././@PaxHeader` block with
// only `mtime` that tarfile writes. tar-stream reads these tars back (see tar-reader.ts).
import type { Writable } from 'node:stream';

const BLOCK = 512;
const RECORD = 20 * BLOCK;

export interface TarMember {
  name: string;
  data: Uint8Array;
  /** Seconds since the epoch, fractional; defaults to now. */
  mtime?: number;
}

export interface TarSample {
  /** The sample key: no dot, no slash. */
  key: string;
  /** suffix (e.g. `jpg`, `json`, `txt`) -> bytes or a UTF-8 string. */
  members: Record<string, Uint8Array | string>;
}

/** Python's repr() of a float, which tarfile writes into the PAX mtime record (and json.dumps uses). */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  // Shortest round-trip digits, as both languages use; only the layout rules differ.
  const [mant, expText] = x.toExponential().split('e') as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    return `${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  const s = x.toFixed(Math.max(0, mant.replace(/^-?\d\.?/, '').length - exp));
  return s.includes('.') ? s : `${s}.0`;
}

function octal(value: number, width: number): string {
  // tarfile's itn(): width-1 octal digits then NUL.
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function put(buf: Buffer, offset: number, length: number, text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > length) throw new Error(`tar header field too long: ${text}`);
  bytes.copy(buf, offset);
}

interface HeaderFields {
  name: string;
  mode: number;
  size: number;
  mtime: number;
  type: string;
  uname: string;
  gname: string;
}

function header(f: HeaderFields): Buffer {
  const buf = Buffer.alloc(BLOCK);
  put(buf, 0, 100, f.name);
  put(buf, 100, 8, octal(f.mode, 8));
  put(buf, 108, 8, octal(0, 8));
  put(buf, 116, 8, octal(0, 8));
  put(buf, 124, 12, octal(f.size, 12));
  put(buf, 136, 12, octal(f.mtime, 12));
  buf.fill(0x20, 148, 156);
  put(buf, 156, 1, f.type);
  put(buf, 257, 8, 'ustar\u000000');
  put(buf, 265, 32, f.uname);
  put(buf, 297, 32, f.gname);
  let sum = 0;
  for (const b of buf) sum += b;
  put(buf, 148, 7, sum.toString(8).padStart(6, '0') + '\0');
  return buf;
}

/** A PAX record `"<len> key=value\n"`, where len counts the whole record including itself. */
function paxRecord(key: string, value: string): Buffer {
  const body = Buffer.byteLength(` ${key}=${value}\n`);
  let len = body;
  for (;;) {
    const next = body + String(len).length;
    if (next === len) break;
    len = next;
  }
  return Buffer.from(`${len} ${key}=${value}\n`, 'utf8');
}

const padding = (n: number): Buffer => Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);

/** Encodes one member: PAX header block + its data block(s) + ustar header + data + padding. */
export function encodeMember(m: TarMember): Buffer[] {
  const mtime = m.mtime ?? Date.now() / 1000;
  const pax = paxRecord('mtime', pythonFloatRepr(mtime));
  return [
    header({ name: '././@PaxHeader', mode: 0, size: pax.length, mtime: 0, type: 'x', uname: '', gname: '' }),
    pax,
    padding(pax.length),
    header({ name: m.name, mode: 0o444, size: m.data.length, mtime: Math.round(mtime), type: '0', uname: 'bigdata', gname: 'bigdata' }),
    Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength),
    padding(m.data.length),
  ];
}

/**
 * Writes samples to a byte stream with backpressure. The caller owns the stream (open, close,
 * rename); `end()` writes the end-of-archive blocks and record padding, then ends the stream.
 */
export class TarWriter {
  private offset = 0;
  private ended = false;

  constructor(private readonly out: Writable) {}

  /** Writes the members of one sample adjacently, in sorted suffix order (as webdataset does). */
  async writeSample(sample: TarSample): Promise<void> {
    if (/[./]/.test(sample.key)) throw new Error(`a webdataset key cannot contain "." or "/": ${sample.key}`);
    if (this.ended) throw new Error('tar already ended');
    const mtime = Date.now() / 1000;
    const chunks: Buffer[] = [];
    for (const suffix of Object.keys(sample.members).sort()) {
      const v = sample.members[suffix]!;
      const data = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
      chunks.push(...encodeMember({ name: `${sample.key}.${suffix}`, data, mtime }));
    }
    // One write per sample: each write to a file stream can cost a thread-pool job, and that pool
    // is the one doing the image decoding.
    await this.push(Buffer.concat(chunks));
  }

  async writeMember(m: TarMember): Promise<void> {
    if (this.ended) throw new Error('tar already ended');
    for (const chunk of encodeMember(m)) await this.push(chunk);
  }

  private async push(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    this.offset += chunk.length;
    if (!this.out.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error): void => {
          this.out.off('drain', onDrain);
          this.out.off('error', done);
          if (err) reject(err);
          else resolve();
        };
        const onDrain = (): void => done();
        this.out.once('drain', onDrain);
        this.out.once('error', done);
      });
    }
  }

  /** Bytes written so far. */
  get size(): number {
    return this.offset;
  }

  async end(): Promise<void> {
    if (this.ended) return;
    await this.push(Buffer.alloc(2 * BLOCK));
    await this.push(Buffer.alloc((RECORD - (this.offset % RECORD)) % RECORD));
    this.ended = true;
    await new Promise<void>((resolve, reject) => {
      this.out.once('error', reject);
      this.out.end(() => resolve());
    });
  }
}
