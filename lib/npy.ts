// NumPy .npy files (format versions 1-3), 2-D, C order, little-endian float16 or float32: the
// embedding files stage 4 writes and reads. Both directions stream by rows so a partition of
// millions of vectors never has to fit in memory at once.
//   Writer: rows are appended to a temporary file whose header reserves room for any shape; close()
//   writes the real shape into that header, then renames (a killed run leaves no half file).
//   Reader: parses the header, checks the file length against the shape (a truncated file is an
//   error naming it), then yields chunks of rows read with positioned reads.
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { tempPathFor } from './atomic-file.ts';

export type NpyDtype = 'float16' | 'float32';

const DESCR: Record<NpyDtype, string> = { float16: '<f2', float32: '<f4' };
const ITEM_SIZE: Record<NpyDtype, number> = { float16: 2, float32: 4 };
const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

export interface NpyHeader {
  dtype: NpyDtype;
  rows: number;
  cols: number;
  /** Byte offset of the first element. */
  dataOffset: number;
  /** Format version (1, 2 or 3) as read. */
  version: number;
}

export class NpyError extends Error {}

// ---- float16 <-> float32 (Node 20 has no Float16Array) ----

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds to nearest even, as numpy's astype(float16) does; overflow goes to infinity. */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // underflows to zero
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m += 1;
    return sign | m; // a carry into the exponent field is the right answer
  }
  const rest = mant & 0x1fff;
  let h = sign | (e << 10) | (mant >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1; // may carry to infinity: correct
  return h;
}

const HALF_TO_FLOAT = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    let v: number;
    if (exp === 0) v = mant * 2 ** -24;
    else if (exp === 0x1f) v = mant ? NaN : Infinity;
    else v = (1 + mant / 1024) * 2 ** (exp - 15);
    table[h] = sign * v;
  }
  return table;
})();

export function float16BitsToFloat32(bits: number): number {
  return HALF_TO_FLOAT[bits & 0xffff]!;
}

export function float16ToFloat32Array(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) dst[i] = HALF_TO_FLOAT[src[i]!]!;
  return dst;
}

export function float32ToFloat16Array(src: ArrayLike<number>, dst = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = float32ToFloat16Bits(src[i]!);
  return dst;
}

// ---- header ----

function headerDict(dtype: NpyDtype, rows: number, cols: number): string {
  return `{'descr': '${DESCR[dtype]}', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
}

/** A version-1 header padded so data starts at a multiple of 64, `minLength` bytes of dict at least. */
function encodeHeader(dtype: NpyDtype, rows: number, cols: number, totalLength?: number): Buffer {
  const dict = headerDict(dtype, rows, cols);
  const prefix = 10; // magic + version + uint16 length
  const total = totalLength ?? Math.ceil((prefix + dict.length + 1) / 64) * 64;
  const pad = total - prefix - dict.length - 1;
  if (pad < 0) throw new NpyError(`npy header for shape (${rows}, ${cols}) does not fit its reserved ${total} bytes`);
  const buf = Buffer.alloc(total, 0x20);
  MAGIC.copy(buf, 0);
  buf[6] = 1;
  buf[7] = 0;
  buf.writeUInt16LE(total - prefix, 8);
  buf.write(dict, prefix, 'latin1');
  buf[total - 1] = 0x0a;
  return buf;
}

/** Parses `{'descr': '<f2', 'fortran_order': False, 'shape': (3, 4), }` - the subset numpy writes. */
function parseHeaderDict(text: string, file: string): { descr: string; fortranOrder: boolean; shape: number[] } {
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new NpyError(`${file}: not a valid .npy header: ${JSON.stringify(text.trim())}`);
  }
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => Number(s.replace(/L$/, '')));
  if (shape.some((n) => !Number.isSafeInteger(n) || n < 0)) throw new NpyError(`${file}: bad shape (${shapeText})`);
  return { descr, fortranOrder: fortran === 'True', shape };
}

async function readExactly(fh: FileHandle, length: number, position: number, file: string): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) throw new NpyError(`${file}: truncated (wanted ${length} bytes at offset ${position}, file ends after ${got})`);
    got += bytesRead;
  }
  return buf;
}

async function readHeaderFrom(fh: FileHandle, file: string): Promise<NpyHeader> {
  const head = await readExactly(fh, 12, 0, file).catch(() => {
    throw new NpyError(`${file}: not a .npy file (shorter than its header)`);
  });
  if (!head.subarray(0, 6).equals(MAGIC)) throw new NpyError(`${file}: not a .npy file (bad magic)`);
  const version = head[6]!;
  let headerLength: number;
  let prefix: number;
  if (version === 1) {
    headerLength = head.readUInt16LE(8);
    prefix = 10;
  } else if (version === 2 || version === 3) {
    headerLength = head.readUInt32LE(8);
    prefix = 12;
  } else {
    throw new NpyError(`${file}: unsupported .npy format version ${version}`);
  }
  const dictBuf = await readExactly(fh, headerLength, prefix, file);
  const { descr, fortranOrder, shape } = parseHeaderDict(dictBuf.toString(version === 3 ? 'utf8' : 'latin1'), file);
  const dtype = (Object.keys(DESCR) as NpyDtype[]).find((d) => DESCR[d] === descr || DESCR[d].replace('<', '|') === descr);
  if (!dtype) throw new NpyError(`${file}: dtype ${descr} is not supported (float16 <f2 or float32 <f4 little-endian only)`);
  if (fortranOrder) throw new NpyError(`${file}: Fortran-order arrays are not supported; save with np.ascontiguousarray`);
  if (shape.length !== 2) throw new NpyError(`${file}: expected a 2-D array, got shape (${shape.join(', ')})`);
  return { dtype, rows: shape[0]!, cols: shape[1]!, dataOffset: prefix + headerLength, version };
}

/** Reads and checks the header of `file`: its length must match the shape exactly. */
export async function readNpyHeader(file: string): Promise<NpyHeader> {
  const fh = await open(file, 'r');
  try {
    const h = await readHeaderFrom(fh, file);
    const size = (await fh.stat()).size;
    const expected = h.dataOffset + h.rows * h.cols * ITEM_SIZE[h.dtype];
    if (size < expected) throw new NpyError(`${file}: truncated: shape (${h.rows}, ${h.cols}) ${h.dtype} needs ${expected} bytes, file has ${size}; rewrite it`);
    if (size > expected) throw new NpyError(`${file}: ${size - expected} bytes after the data of shape (${h.rows}, ${h.cols}); not a clean .npy file`);
    return h;
  } finally {
    await fh.close();
  }
}

export interface NpyChunk {
  /** Index of the chunk's first row in the file. */
  start: number;
  rows: number;
  cols: number;
  /** rows*cols values, row-major, converted to float32. */
  data: Float32Array;
}

export interface ReadRowsOptions {
  /** Rows per chunk (default: about 8 MiB of float32). */
  chunkRows?: number;
  /** First row to read (default 0). */
  start?: number;
  /** One past the last row to read (default: all). */
  end?: number;
}

/** Yields the rows of a 2-D float16/float32 .npy file as float32 chunks, never the whole file at once. */
export async function* readNpyRows(file: string, options: ReadRowsOptions = {}): AsyncGenerator<NpyChunk> {
  const h = await readNpyHeader(file);
  const item = ITEM_SIZE[h.dtype];
  const chunkRows = Math.max(1, options.chunkRows ?? Math.floor((8 << 20) / Math.max(1, h.cols * 4)));
  const start = Math.max(0, options.start ?? 0);
  const end = Math.min(h.rows, options.end ?? h.rows);
  const fh = await open(file, 'r');
  try {
    for (let row = start; row < end; row += chunkRows) {
      const n = Math.min(chunkRows, end - row);
      const raw = await readExactly(fh, n * h.cols * item, h.dataOffset + row * h.cols * item, file);
      let data: Float32Array;
      if (h.dtype === 'float32') {
        data = new Float32Array(n * h.cols);
        new Uint8Array(data.buffer).set(raw);
      } else {
        const halves = new Uint16Array(n * h.cols);
        new Uint8Array(halves.buffer).set(raw);
        data = float16ToFloat32Array(halves);
      }
      yield { start: row, rows: n, cols: h.cols, data };
    }
  } finally {
    await fh.close();
  }
}

/** Reads a whole (small) .npy file into one float32 array. */
export async function readNpy(file: string): Promise<{ rows: number; cols: number; dtype: NpyDtype; data: Float32Array }> {
  const h = await readNpyHeader(file);
  const data = new Float32Array(h.rows * h.cols);
  for await (const c of readNpyRows(file)) data.set(c.data, c.start * h.cols);
  return { rows: h.rows, cols: h.cols, dtype: h.dtype, data };
}

// ---- writer ----

/** The header is sized for the largest possible shape so close() can rewrite it in place. */
const RESERVED_HEADER = encodeHeader('float32', Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).length;

export class NpyWriter {
  private rowsWritten = 0;
  private position: number;
  private closed = false;

  private constructor(
    readonly path: string,
    readonly dtype: NpyDtype,
    readonly cols: number,
    private readonly tempPath: string,
    private readonly fh: FileHandle,
  ) {
    this.position = RESERVED_HEADER;
  }

  /** Starts `path` (written under a temporary name until close()). */
  static async create(path: string, dtype: NpyDtype, cols: number): Promise<NpyWriter> {
    if (!Number.isInteger(cols) || cols <= 0) throw new NpyError(`npy writer: cols must be a positive integer, got ${cols}`);
    await mkdir(dirname(path), { recursive: true });
    const tempPath = tempPathFor(path);
    const fh = await open(tempPath, 'w');
    try {
      await fh.write(encodeHeader(dtype, 0, cols, RESERVED_HEADER), 0, RESERVED_HEADER, 0);
    } catch (err) {
      await fh.close();
      await rm(tempPath, { force: true });
      throw err;
    }
    return new NpyWriter(path, dtype, cols, tempPath, fh);
  }

  get rows(): number {
    return this.rowsWritten;
  }

  /**
   * Appends whole rows. Float32Array (or number[]) values are converted to the file's dtype; a
   * Uint16Array is taken as raw float16 bits (only for a float16 file).
   */
  async append(values: Float32Array | Uint16Array | readonly number[]): Promise<void> {
    if (this.closed) throw new NpyError(`${this.path}: append after close`);
    if (values.length % this.cols !== 0) throw new NpyError(`${this.path}: ${values.length} values is not a whole number of rows of ${this.cols}`);
    let bytes: Uint8Array;
    if (values instanceof Uint16Array) {
      if (this.dtype !== 'float16') throw new NpyError(`${this.path}: raw float16 bits given to a ${this.dtype} file`);
      bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    } else if (this.dtype === 'float16') {
      const h = float32ToFloat16Array(values);
      bytes = new Uint8Array(h.buffer);
    } else {
      const f = values instanceof Float32Array ? values : Float32Array.from(values);
      bytes = new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
    }
    let off = 0;
    while (off < bytes.length) {
      const { bytesWritten } = await this.fh.write(bytes, off, bytes.length - off, this.position);
      off += bytesWritten;
      this.position += bytesWritten;
    }
    this.rowsWritten += values.length / this.cols;
  }

  /** Writes the final shape into the header, syncs, and renames to the final name. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.fh.write(encodeHeader(this.dtype, this.rowsWritten, this.cols, RESERVED_HEADER), 0, RESERVED_HEADER, 0);
      await this.fh.sync();
      await this.fh.close();
      await rename(this.tempPath, this.path);
    } catch (err) {
      await this.fh.close().catch(() => undefined);
      await rm(this.tempPath, { force: true });
      throw err;
    }
  }

  /** Drops the temporary file; the final name is never created. */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close().catch(() => undefined);
    await rm(this.tempPath, { force: true });
  }
}

/** Writes a whole array at once (tests, small outputs). */
export async function writeNpy(path: string, dtype: NpyDtype, cols: number, values: Float32Array | readonly number[]): Promise<void> {
  const w = await NpyWriter.create(path, dtype, cols);
  try {
    await w.append(values);
  } catch (err) {
    await w.abort();
    throw err;
  }
  await w.close();
}

/** Bytes a file of this shape takes (header as our writer sizes it). */
export function npyFileSize(dtype: NpyDtype, rows: number, cols: number): number {
  return RESERVED_HEADER + rows * cols * ITEM_SIZE[dtype];
}

export async function npyRowCount(file: string): Promise<number> {
  return (await readNpyHeader(file)).rows;
}
