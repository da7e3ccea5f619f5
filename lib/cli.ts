import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';

// One flag table drives the parser, `--help` and the defaults printed at start.
// Flags are kebab-case and also accepted in snake_case (img2dataset / clip-retrieval spelling),
// as `--flag value` or `--flag=value`; booleans take `--flag`, `--no-flag`, `--flag True|False`.

export type FlagType = 'string' | 'int' | 'float' | 'bool' | 'list' | 'json';

export interface FlagDef {
  type: FlagType;
  help: string;
  default?: unknown;
  required?: boolean;
  choices?: readonly string[];
  /** Extra accepted spellings (without dashes), e.g. a peer's differently named flag. */
  aliases?: readonly string[];
  /** Smallest accepted value of an int or float flag. */
  min?: number;
}

export type FlagTable = Record<string, FlagDef>;

type Camel<S extends string> = S extends `${infer A}-${infer B}` ? `${A}${Capitalize<Camel<B>>}` : S;
type Base<D extends FlagDef> = D['type'] extends 'string'
  ? string
  : D['type'] extends 'int' | 'float'
    ? number
    : D['type'] extends 'bool'
      ? boolean
      : D['type'] extends 'list'
        ? string[]
        : unknown;
type ValueOf<D extends FlagDef> = D extends { required: true }
  ? Base<D>
  : D extends { default: null }
    ? Base<D> | null
    : D extends { default: unknown }
      ? Base<D>
      : Base<D> | undefined;

export type ParsedFlags<T extends FlagTable> = { -readonly [K in keyof T & string as Camel<K>]: ValueOf<T[K]> };

export interface CliSpec<T extends FlagTable> {
  /** Command as a user types it, e.g. `npx tsx download_csv/run.ts`. */
  command: string;
  summary: string;
  flags: T;
  /** Names of positional arguments, shown in usage. */
  positionals?: readonly string[];
  /** Free text appended to --help (examples, notes). */
  epilog?: string;
}

export class CliError extends Error {}

export interface ParseResult<T extends FlagTable> {
  flags: ParsedFlags<T>;
  positionals: string[];
}

const camel = (kebab: string): string => kebab.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function parseBool(raw: string, flag: string): boolean {
  const v = raw.toLowerCase();
  if (['true', '1', 'yes', 'y', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'n', 'off', 'none'].includes(v)) return false;
  throw new CliError(`--${flag}: expected True or False, got "${raw}"`);
}

function convert(def: FlagDef, raw: string, flag: string): unknown {
  // Python's None, as python-fire users pass it, means "the default" (img2dataset resolves a None
  // --disallowed_header_directives to its default list, and a None column list to none).
  if (raw === 'None' && def.type !== 'bool' && (def.type === 'list' || def.default === null || def.default === undefined)) {
    return def.default ?? null;
  }
  switch (def.type) {
    case 'string':
      if (def.choices && !def.choices.includes(raw)) {
        throw new CliError(`--${flag}: "${raw}" is not one of ${def.choices.join(', ')}`);
      }
      return raw;
    case 'int': {
      const n = Number(raw.replace(/_/g, ''));
      if (raw.trim() === '' || !Number.isInteger(n)) throw new CliError(`--${flag}: expected an integer, got "${raw}"`);
      return atLeast(def, n, flag);
    }
    case 'float': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw new CliError(`--${flag}: expected a number, got "${raw}"`);
      return atLeast(def, n, flag);
    }
    case 'bool':
      return parseBool(raw, flag);
    case 'list':
      return parseList(raw, flag);
    case 'json':
      try {
        return JSON.parse(raw);
      } catch {
        return raw; // python-fire passes non-JSON strings through unchanged
      }
  }
}

function atLeast(def: FlagDef, n: number, flag: string): number {
  if (def.min !== undefined && n < def.min) throw new CliError(`--${flag} must be at least ${def.min}, got ${n}`);
  return n;
}

/** Accepts a JSON list (`'["a","b"]'`, as img2dataset users pass it), a Python-ish list or `a,b`. */
function parseList(raw: string, flag: string): string[] {
  const t = raw.trim();
  if (t === '' || t === '[]') return [];
  if (t.startsWith('[')) {
    try {
      const v: unknown = JSON.parse(t.replace(/'/g, '"'));
      if (Array.isArray(v)) return v.map(String);
    } catch {
      throw new CliError(`--${flag}: could not read the list ${raw}; write it as '["a","b"]' or a,b`);
    }
  }
  return t.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

export interface Cli<T extends FlagTable> {
  /** Parses argv (without node and script); throws CliError on a bad command line. */
  parse(argv: readonly string[]): ParseResult<T>;
  help(): string;
  /** The effective settings, one per line, for printing at start. */
  describe(flags: ParsedFlags<T>): string;
  /**
   * parse + the conventional handling: `--help` prints help and exits 0, a bad command line
   * prints a one-line error and exits 2, otherwise the effective settings are printed to stderr.
   */
  run(argv?: readonly string[]): ParseResult<T>;
  /**
   * run() for a main() that returns its exit code instead of exiting (subcommands, in-process
   * callers): `--help` gives 0, a bad command line or a throwing `check` a one-line error and 2;
   * otherwise the settings are printed and the parse comes back with what `check` returned.
   */
  start<C = undefined>(argv: readonly string[], check?: (flags: ParsedFlags<T>) => C): (ParseResult<T> & { checked: C }) | number;
}

export function defineCli<const T extends FlagTable>(spec: CliSpec<T>): Cli<T> {
  const byName = new Map<string, string>(); // any accepted spelling -> canonical kebab name
  for (const [name, def] of Object.entries(spec.flags)) {
    byName.set(name, name);
    byName.set(name.replace(/-/g, '_'), name);
    for (const a of def.aliases ?? []) byName.set(a, name);
  }

  function parse(argv: readonly string[]): ParseResult<T> {
    const values: Record<string, unknown> = {};
    const positionals: string[] = [];
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i]!;
      if (arg === '--') {
        positionals.push(...argv.slice(i + 1));
        break;
      }
      if (!arg.startsWith('--')) {
        positionals.push(arg);
        continue;
      }
      const eq = arg.indexOf('=');
      let key = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      let inline: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
      let name = byName.get(key);
      if (name === undefined && key.startsWith('no-') || name === undefined && key.startsWith('no_')) {
        const base = byName.get(key.slice(3));
        if (base !== undefined && spec.flags[base]!.type === 'bool' && inline === undefined) {
          values[base] = false;
          continue;
        }
      }
      if (name === undefined) {
        const near = nearest(key.replace(/_/g, '-'), Object.keys(spec.flags));
        throw new CliError(
          `unknown option --${key}${near.length ? ` (did you mean ${near.map((n) => `--${n}`).join(', ')}?)` : ''}; see --help`,
        );
      }
      key = name;
      const def = spec.flags[name]!;
      if (def.type === 'bool' && inline === undefined) {
        const next = argv[i + 1];
        if (next !== undefined && /^(true|false|1|0|yes|no)$/i.test(next)) {
          inline = next;
          i++;
        } else {
          values[name] = true;
          continue;
        }
      }
      if (inline === undefined) {
        if (i + 1 >= argv.length) throw new CliError(`--${name} needs a value; see --help`);
        inline = argv[++i]!;
      }
      values[name] = convert(def, inline, name);
    }
    const out: Record<string, unknown> = {};
    for (const [name, def] of Object.entries(spec.flags)) {
      if (name in values) out[camel(name)] = values[name];
      else if (def.required) throw new CliError(`--${name} is required; see --help`);
      else out[camel(name)] = def.default;
    }
    return { flags: out as ParsedFlags<T>, positionals };
  }

  function help(): string {
    const pos = (spec.positionals ?? []).map((p) => ` <${p}>`).join('');
    const lines = [`${spec.summary}`, '', `Usage: ${spec.command}${pos} [options]`, '', 'Options:'];
    const rows = Object.entries(spec.flags).map(([name, def]) => {
      const meta = def.type === 'bool' ? '' : ` ${def.choices ? def.choices.join('|') : def.type.toUpperCase()}`;
      const dflt = def.required ? ' (required)' : def.default === undefined ? '' : ` (default: ${show(def.default)})`;
      return [`  --${name}${meta}`, `${def.help}${dflt}`] as const;
    });
    rows.push(['  --help', 'Show this help and exit']);
    const width = Math.min(44, Math.max(...rows.map((r) => r[0].length)) + 2);
    for (const [left, right] of rows) {
      lines.push(left.length >= width ? `${left}\n${' '.repeat(width)}${right}` : `${left.padEnd(width)}${right}`);
    }
    lines.push('', 'Every option also accepts its snake_case spelling (--output_folder) and --flag=value.');
    if (spec.epilog) lines.push('', spec.epilog.trim());
    return lines.join('\n') + '\n';
  }

  function describe(flags: ParsedFlags<T>): string {
    const f = flags as Record<string, unknown>;
    return Object.keys(spec.flags)
      .map((name) => `  ${name} = ${show(f[camel(name)])}`)
      .join('\n');
  }

  function run(argv: readonly string[] = process.argv.slice(2)): ParseResult<T> {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(help());
      process.exit(0);
    }
    return exitOnCliError(() => {
      const parsed = parse(argv);
      printSettings(parsed);
      return parsed;
    });
  }

  function printSettings(parsed: ParseResult<T>): void {
    process.stderr.write(`${spec.command}${parsed.positionals.map((p) => ` ${p}`).join('')}, settings:\n${describe(parsed.flags)}\n`);
  }

  function start<C = undefined>(argv: readonly string[], check?: (flags: ParsedFlags<T>) => C): (ParseResult<T> & { checked: C }) | number {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(help());
      return 0;
    }
    let parsed: ParseResult<T>;
    let checked: C;
    try {
      parsed = parse(argv);
      checked = check ? check(parsed.flags) : (undefined as C);
    } catch (err) {
      process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
      return 2;
    }
    printSettings(parsed);
    return { ...parsed, checked };
  }

  return { parse, help, describe, run, start };
}

/** Flag names a typo probably meant: close in edit distance, or sharing a long prefix. */
function nearest(typo: string, names: readonly string[]): string[] {
  const dist = (a: string, b: string): number => {
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const cur = [i];
      for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
    return prev[b.length]!;
  };
  const prefix = (a: string, b: string): number => {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    return i;
  };
  return names
    .map((n) => ({ n, d: dist(typo, n), p: prefix(typo, n) }))
    .filter((x) => x.d <= Math.max(2, Math.floor(typo.length / 3)) || x.p >= 5)
    .sort((a, b) => a.d - b.d)
    .slice(0, 3)
    .map((x) => x.n);
}

function show(v: unknown): string {
  if (v === undefined) return '(unset)';
  if (v === null) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (Array.isArray(v)) return JSON.stringify(v);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/**
 * Runs a command-line check (parsing, or a stage's own validation of the parsed flags): a CliError
 * becomes a one-line `error: ...` and exit code 2, as for any bad command line.
 */
export function exitOnCliError<R>(check: () => R): R {
  try {
    return check();
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** Parses sizes such as `50MB`, `4G`, `16GiB`, `1e6` into bytes. */
export function parseByteSize(raw: string | number): number {
  if (typeof raw === 'number') return raw;
  const m = /^\s*([\d.]+(?:e\d+)?)\s*([kmgt]?)(i?)(b?)\s*$/i.exec(raw);
  if (!m) throw new CliError(`"${raw}" is not a size; write e.g. 512MB, 4G or 1000000`);
  const n = Number(m[1]);
  const unit = m[2]!.toLowerCase();
  // 4G and 4GiB are binary (autofaiss' spelling); 4GB is decimal (DuckDB's).
  const base = m[4] && !m[3] ? 1000 : 1024;
  const exp = { '': 0, k: 1, m: 2, g: 3, t: 4 }[unit] ?? 0;
  return Math.round(n * base ** exp);
}

/** A size flag's value in bytes, at least 1: a CliError names the flag otherwise. */
export function byteSizeFlag(flag: string, raw: string | number): number {
  let bytes: number;
  try {
    bytes = parseByteSize(raw);
  } catch (err) {
    throw new CliError(`${flag}: ${(err as Error).message}`);
  }
  if (!(bytes >= 1)) throw new CliError(`${flag} must be at least 1 byte, got "${raw}"`);
  return bytes;
}

/** True when the module with this `import.meta.url` is the script node was started with. */
export function isMainModule(metaUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  return metaUrl === pathToFileURL(resolvePath(script)).href;
}
