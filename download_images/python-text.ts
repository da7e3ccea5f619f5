// Python's text forms of a sample's values, byte for byte as img2dataset writes them: json.dumps
// (ensure_ascii, NaN/Infinity, float repr, indent layout) for .json and stats files, str() for .txt.
// writers.ts and stats.ts both write them.
import { pythonFloatRepr } from '../lib/webdataset/tar-writer.ts';


/** A number that Python holds as a float: serialised as `1.0`, not `1`. */
export class PyFloat {
  constructor(readonly value: number) {}
}

function pyString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += s[i];
  }
  return out + '"';
}

function pyFloat(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  return pythonFloatRepr(x);
}

/** `json.dumps(value, indent=indent)`; indent null gives Python's `", "` / `": "` one-liner. */
export function pyJsonDumps(value: unknown, indent: number | null = null): string {
  const enc = (v: unknown, level: number): string => {
    if (v === null || v === undefined) return 'null';
    if (v instanceof PyFloat) return pyFloat(v.value);
    switch (typeof v) {
      case 'boolean':
        return v ? 'true' : 'false';
      case 'bigint':
        return v.toString();
      case 'number':
        return Number.isInteger(v) ? String(v) : pyFloat(v);
      case 'string':
        return pyString(v);
    }
    // Values Python's json cannot encode (timestamps, bytes) are written as text rather than
    // losing the sample.
    if (v instanceof Date) return pyString(v.toISOString());
    if (v instanceof Uint8Array) return pyString(Buffer.from(v).toString('base64'));
    const open = indent === null ? '' : '\n' + ' '.repeat(indent * (level + 1));
    const close = indent === null ? '' : '\n' + ' '.repeat(indent * level);
    const sep = indent === null ? ', ' : ',' + open;
    if (Array.isArray(v)) {
      if (v.length === 0) return '[]';
      return `[${open}${v.map((x) => enc(x, level + 1)).join(sep)}${close}]`;
    }
    if (typeof v === 'object') {
      const entries = Object.entries(v as Record<string, unknown>);
      if (entries.length === 0) return '{}';
      return `{${open}${entries.map(([k, x]) => `${pyString(k)}: ${enc(x, level + 1)}`).join(sep)}${close}}`;
    }
    return pyString(String(v));
  };
  return enc(value, 0);
}

/** Python's `str()` of a caption, for `.txt` (`""` for a null caption). */
export function pyStr(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (v instanceof PyFloat) return pythonFloatRepr(v.value);
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pythonFloatRepr(v);
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  return String(v);
}
