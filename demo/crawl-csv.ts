// Deterministic crawling@home CSVs as the workers wrote them (reference cah-prepro.md 3.1, 6.1):
// pandas `to_csv(sep="|", index=False)` with minimal quoting, varying column sets, duplicate
// (URL, TEXT) pairs within and across files, awkward captions, a few broken rows, some gzipped.
// Captions name the colour and shape that `/images/<id>` shows (demo/images.ts), worded like alt text.
import { gzipSync } from 'node:zlib';
import { Rng } from '../lib/random.ts';
import { shapeContentFor, type ShapeContent } from './images.ts';

/** The column sets workers wrote at different times; the last one has no CLIP score. */
export const COLUMN_SETS = {
  hybridWithPath: ['SAMPLE_ID', 'PATH', 'URL', 'TEXT', 'HEIGHT', 'WIDTH', 'LICENSE', 'NSFW', 'similarity'],
  hybrid: ['SAMPLE_ID', 'URL', 'TEXT', 'HEIGHT', 'WIDTH', 'LICENSE', 'NSFW', 'similarity'],
  clipFilter: ['SAMPLE_ID', 'PATH', 'URL', 'TEXT', 'HEIGHT', 'WIDTH', 'LICENSE', 'dropped', 'NSFW', 'similarity'],
  early: ['SAMPLE_ID', 'PATH', 'URL', 'TEXT', 'NSFW', 'similarity'],
  unfiltered: ['SAMPLE_ID', 'PATH', 'URL', 'TEXT', 'HEIGHT', 'WIDTH', 'LICENSE'],
} as const;

export type ColumnSetName = keyof typeof COLUMN_SETS;

/** One data row as written: every value is the CSV text of the field (before quoting). */
export type CsvRow = Record<string, string>;

export interface CsvFile {
  /** Path relative to the crawl root, with `/` separators. */
  path: string;
  columnSet: ColumnSetName;
  columns: readonly string[];
  /** The well-formed data rows, in file order. */
  rows: CsvRow[];
  /** 1-based physical line numbers (header = line 1) where a broken row starts. */
  brokenLines: number[];
  gzip: boolean;
  /** The bytes served / written (gzipped when `gzip`). */
  content: Buffer;
}

export interface CrawlOptions {
  seed?: number;
  /** Base of the image URLs the rows point to, e.g. `http://127.0.0.1:8080`. */
  imageBaseUrl: string;
  files?: number;
  rowsPerFile?: number;
  /** Share of rows that repeat an earlier (URL, TEXT) pair. */
  duplicateRate?: number;
  /** Put broken rows (wrong field count) into some files. */
  brokenRows?: boolean;
  /** Share of new pairs whose URL is a faulty one, `${imageBaseUrl}/faults/<kind>/<n>`. */
  faultRate?: number;
  /** Fault kinds to draw from (see demo/faults.ts); default: the ones that fail fast. */
  faultKinds?: readonly string[];
}

/** Faults that end at once, so a demo run is not held up by deadlines. */
export const FAST_FAULT_KINDS: readonly string[] = ['404', '500', 'html', 'reset', 'truncated', 'robots-noai', 'robots-otherbot', 'redirect-ok', 'bomb', 'redirect-loop'];

const WORDS = (
  'sunset beach mountain river city street portrait vintage wooden table kitchen garden flower ' +
  'red blue green yellow black white dog cat bird horse car bicycle train bridge house window door ' +
  'old new modern classic handmade leather dress shirt shoes bag watch ring necklace cake bread ' +
  'coffee tea wine bottle glass chair sofa lamp bed pillow poster print canvas painting drawing ' +
  'logo icon vector illustration map book cover album photo stock image wallpaper background ' +
  'summer winter autumn spring snow rain night morning lake forest desert island ocean boat'
).split(' ');

/** Captions that break naive CSV handling; every one must survive byte-exact. */
export const AWKWARD_CAPTIONS: readonly string[] = [
  'Sunset | beach photo with a pipe',
  'He said "hello" to the "cat"',
  'first line\nsecond line of the caption',
  'Café au lait — 東京 の 桜 🌸',
  'A|B "quoted" and\na newline, all at once',
  '  leading and trailing spaces  ',
  'backslash \\" is not an escape here',
  'comma, separated, words; and semicolons',
  'emoji only 🐈‍⬛🎉',
  '"fully quoted caption"',
];

const LICENSES = ['?', '?', '?', '?', 'https://creativecommons.org/licenses/by-nc-sa/3.0/', 'https://creativecommons.org/licenses/by/4.0/'];

const capital = (w: string): string => w.replace(/\b\w/g, (ch) => ch.toUpperCase());

/** Alt text for a picture of `content`, worded the many ways sites word it. */
export function shapeCaption(rng: Rng, content: ShapeContent): string {
  const c = content.colour;
  const s = content.shape;
  const bg = content.background;
  const size = content.size < 0.32 ? 'small' : content.size > 0.36 ? 'large' : 'simple';
  const templates: Array<() => string> = [
    () => `a ${c} ${s}`,
    () => `${c} ${s} on ${bg}`,
    () => `${capital(c)} ${s} on a ${bg} background`,
    () => `${size} ${c} ${s}`,
    () => `${capital(c)} ${capital(s)} Icon`,
    () => `${c} ${s} shape isolated on ${bg} background, vector illustration`,
    () => `photo of a ${c} ${s}`,
    () => `flat ${c} ${s} clipart`,
    () => `${s} (${c})`,
    () => `${c}-${s}-${rng.int(1, 999)}.jpg`,
    () => `A ${c.toUpperCase()} ${s.toUpperCase()} ON ${bg.toUpperCase()}`,
    () => `bright ${c} ${s} sticker, ${rng.int(2, 12)} cm`,
  ];
  return rng.pick(templates)();
}

/** The caption of a new row: mostly naming what `/images/<id>` shows, sometimes not (as on the web). */
function caption(rng: Rng, content: ShapeContent): string {
  if (rng.chance(0.08)) return rng.pick(AWKWARD_CAPTIONS);
  if (rng.chance(0.04)) return rng.chance(0.5) ? `IMG_${rng.int(1000, 9999)}.JPG` : Array.from({ length: rng.int(2, 8) }, () => rng.pick(WORDS)).join(' ');
  return shapeCaption(rng, content);
}

/** pandas' QUOTE_MINIMAL: quote a field holding the separator, a quote or a line break. */
export function csvField(value: string, sep = '|'): string {
  return value.includes(sep) || value.includes('"') || value.includes('\n') || value.includes('\r')
    ? `"${value.replace(/"/g, '""')}"`
    : value;
}

export function csvLine(values: readonly string[], sep = '|'): string {
  return values.map((v) => csvField(v, sep)).join(sep) + '\n';
}

interface Pair {
  url: string;
  text: string;
}

export function generateCrawlCsvs(opts: CrawlOptions): CsvFile[] {
  const root = new Rng(opts.seed ?? 0);
  const nFiles = opts.files ?? 12;
  const rowsPerFile = opts.rowsPerFile ?? 200;
  const dupRate = opts.duplicateRate ?? 0.3;
  const base = opts.imageBaseUrl.replace(/\/$/, '');
  const setNames = Object.keys(COLUMN_SETS) as ColumnSetName[];
  const seen: Pair[] = [];
  let imageId = 0;
  const files: CsvFile[] = [];

  for (let f = 0; f < nFiles; f++) {
    const rng = root.fork(`file-${f}`);
    // Cycle through the sets so every small crawl has each of them; the hybrid ones dominate.
    const columnSet = f < setNames.length ? setNames[f]! : rng.pick(['hybrid', 'hybrid', 'hybridWithPath', 'clipFilter', 'early'] as const);
    const columns = COLUMN_SETS[columnSet];
    const day = 20210818 + (f % 3);
    const startId = 41_000_000_000 + f * 1_000_000;
    const name = `FIRST_SAMPLE_ID_IN_SHARD_${startId}_LAST_SAMPLE_ID_IN_SHARD_${startId + 999_999}_${f % 2}.csv`;
    const gzip = f % 5 === 4;
    const path = `${day}/job-${String(f).padStart(3, '0')}/${name}${gzip ? '.gz' : ''}`;
    // One file in six writes its sizes as pandas does when the column has gaps: floats and blanks.
    const floatSizes = f % 6 === 2;
    const rows: CsvRow[] = [];
    const brokenLines: number[] = [];
    let text = csvLine(columns);
    let line = 2;
    for (let i = 0; i < rowsPerFile; i++) {
      if (opts.brokenRows !== false && f % 4 === 1 && (i === 7 || i === rowsPerFile - 3)) {
        // A row with too many fields and one with too few: both unparsable against the header.
        const broken = i === 7 ? `${startId + i}|x|y|z|${'|extra'.repeat(columns.length)}\n` : `${startId + i}|only-two\n`;
        brokenLines.push(line);
        text += broken;
        line += 1;
        continue;
      }
      let pair: Pair;
      if (seen.length > 0 && rng.chance(dupRate)) {
        pair = rng.pick(seen);
      } else {
        const id = imageId++;
        // Some pairs share a URL or a caption with an earlier one: not duplicates, must be kept.
        const prev = seen.length > 0 && rng.chance(0.05) ? rng.pick(seen) : undefined;
        const fault = opts.faultRate && rng.chance(opts.faultRate) ? rng.pick(opts.faultKinds ?? FAST_FAULT_KINDS) : null;
        const fresh = fault ? `${base}/faults/${fault}/${id}` : `${base}/images/${id}.jpg`;
        const url = prev && rng.chance(0.5) ? prev.url : fresh;
        const t = prev && url !== prev.url ? prev.text : caption(rng, shapeContentFor(id, opts.seed ?? 0));
        pair = { url, text: t };
        seen.push(pair);
      }
      const width = rng.int(16, 1600);
      const height = rng.int(16, 1600);
      const row: CsvRow = {};
      for (const c of columns) {
        switch (c) {
          case 'SAMPLE_ID': row[c] = String(startId + i); break;
          case 'PATH': row[c] = `save/images/${startId + i}.jpg`; break;
          case 'URL': row[c] = pair.url; break;
          case 'TEXT': row[c] = pair.text; break;
          // Workers wrote the width under HEIGHT and the height under WIDTH (reference 6.1).
          case 'HEIGHT': row[c] = floatSizes ? (rng.chance(0.1) ? '' : `${width}.0`) : String(width); break;
          case 'WIDTH': row[c] = floatSizes ? (rng.chance(0.1) ? '' : `${height}.0`) : rng.chance(0.01) ? 'n/a' : String(height); break;
          case 'LICENSE': row[c] = rng.pick(LICENSES); break;
          case 'dropped': row[c] = 'False'; break;
          case 'NSFW': row[c] = rng.chance(0.85) ? 'UNLIKELY' : rng.chance(0.6) ? 'UNSURE' : 'NSFW'; break;
          case 'similarity': row[c] = String(Math.round((0.3 + rng.next() * 0.15) * 1e8) / 1e8); break;
        }
      }
      rows.push(row);
      const out = csvLine(columns.map((c) => row[c]!));
      text += out;
      line += out.split('\n').length - 1;
    }
    const raw = Buffer.from(text, 'utf8');
    files.push({ path, columnSet, columns, rows, brokenLines, gzip, content: gzip ? gzipSync(raw, { level: 6 }) : raw });
  }
  return files;
}
