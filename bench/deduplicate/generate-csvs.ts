// Large crawling@home CSV trees for the dedup benchmark, written as a stream: demo/crawl-csv.ts keeps
// every row in memory, which is fine for tests but not for 10M rows. A duplicate re-derives an
// earlier pair from its id instead of remembering it, so memory stays flat whatever N is.
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { finished } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { AWKWARD_CAPTIONS, COLUMN_SETS, csvLine, type ColumnSetName } from '../../demo/crawl-csv.ts';
import { Rng } from '../../lib/random.ts';

export interface BenchCrawlOptions {
  root: string;
  rows: number;
  rowsPerFile?: number;
  duplicateRate?: number;
  seed?: number;
}

export interface BenchCrawl {
  files: number;
  rows: number;
  bytes: number;
}

const WORDS = 'red blue green old new photo stock image vintage wooden table garden city river dog cat car house lamp book cover map print poster summer winter beach'.split(' ');

function pairOf(seed: number, id: number): { url: string; text: string } {
  const rng = new Rng(seed).fork(id);
  let text: string;
  if (rng.chance(0.05)) text = rng.pick(AWKWARD_CAPTIONS) + ` #${id % 97}`;
  else {
    const n = rng.int(3, 10);
    const words: string[] = [];
    for (let i = 0; i < n; i++) words.push(rng.pick(WORDS));
    text = words.join(' ');
  }
  return { url: `https://img${id % 1000}.example.com/p/${id}.jpg`, text };
}

export async function generateBenchCrawl(opts: BenchCrawlOptions): Promise<BenchCrawl> {
  const perFile = opts.rowsPerFile ?? 10_000;
  const dupRate = opts.duplicateRate ?? 0.3;
  const seed = opts.seed ?? 0;
  const sets = Object.keys(COLUMN_SETS) as ColumnSetName[];
  const rng = new Rng(seed);
  let nextId = 0;
  let written = 0;
  let files = 0;
  let bytes = 0;
  while (written < opts.rows) {
    const f = files++;
    const columns = COLUMN_SETS[f < sets.length ? sets[f]! : rng.pick(['hybrid', 'hybrid', 'hybridWithPath', 'clipFilter', 'early', 'unfiltered'] as const)];
    const startId = 41_000_000_000 + f * 1_000_000;
    const gzip = f % 5 === 4;
    const path = join(opts.root, `${20210818 + (f % 3)}`, `job-${String(f).padStart(5, '0')}`, `FIRST_SAMPLE_ID_IN_SHARD_${startId}_${f % 2}.csv${gzip ? '.gz' : ''}`);
    await mkdir(dirname(path), { recursive: true });
    const out = createWriteStream(path);
    const sink = gzip ? createGzip({ level: 1 }) : null;
    if (sink) sink.pipe(out);
    const target = sink ?? out;
    let chunk = csvLine(columns);
    const n = Math.min(perFile, opts.rows - written);
    for (let i = 0; i < n; i++) {
      const id = nextId > 0 && rng.chance(dupRate) ? rng.int(0, nextId - 1) : nextId++;
      const pair = pairOf(seed, id);
      const w = rng.int(16, 1600);
      const h = rng.int(16, 1600);
      const values = columns.map((c) => {
        switch (c) {
          case 'SAMPLE_ID': return String(startId + i);
          case 'PATH': return `save/images/${startId + i}.jpg`;
          case 'URL': return pair.url;
          case 'TEXT': return pair.text;
          case 'HEIGHT': return String(w);
          case 'WIDTH': return String(h);
          case 'LICENSE': return rng.chance(0.8) ? '?' : 'https://creativecommons.org/licenses/by/4.0/';
          case 'dropped': return 'False';
          case 'NSFW': return rng.chance(0.85) ? 'UNLIKELY' : 'UNSURE';
          case 'similarity': return (0.3 + rng.next() * 0.15).toFixed(8);
          default: return '';
        }
      });
      chunk += csvLine(values);
      if (chunk.length > 1 << 16) {
        bytes += Buffer.byteLength(chunk);
        if (!target.write(chunk)) await new Promise<void>((r) => target.once('drain', () => r()));
        chunk = '';
      }
    }
    bytes += Buffer.byteLength(chunk);
    target.end(chunk);
    await finished(out);
    written += n;
  }
  return { files, rows: written, bytes };
}
