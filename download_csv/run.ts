// Stage 1: crawl an HTTP directory listing and download every matching file, in parallel and
// resumably. See download_csv/README.md.
import { stat } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { TEMP_PREFIX, writeFileAtomic } from '../lib/atomic-file.ts';
import { byteSizeFlag, CliError, defineCli, exitOnCliError, isMainModule } from '../lib/cli.ts';
import { HttpClient, HttpError, isRetryable } from '../lib/http/client.ts';
import { errorMessage, log } from '../lib/log.ts';
import { LOCK_NAME, lockOutputOrExit } from '../lib/output-lock.ts';
import { runPool } from '../lib/pool.ts';
import { formatBytes, formatDuration, Progress } from '../lib/progress.ts';
import { crawlListing } from './crawler.ts';
import { downloadFile, LocalFileError, type FileDownloadStatus } from './file-downloader.ts';
import { makeIncludeFilter } from './listing.ts';

export const cli = defineCli({
  command: 'npx tsx download_csv/run.ts',
  summary: 'Crawl an HTTP directory listing (Apache, nginx, lighttpd autoindex) and download every matching file, resumably.',
  flags: {
    url: { type: 'string', required: true, help: 'Start URL of the listing; the crawl stays below it' },
    'output-folder': { type: 'string', required: true, help: 'Where files go, at their path relative to the start URL' },
    include: { type: 'list', default: ['*.csv'], help: 'Glob(s) of files to fetch, comma-separated; matched on the file name, or on the relative path when the glob has a /' },
    parallel: { type: 'int', default: 16, min: 1, help: 'Files downloaded (and listings read) at once' },
    retries: { type: 'int', default: 5, min: 0, help: 'Further attempts per file or listing after a network error, timeout, 429 or 5xx' },
    timeout: { type: 'float', default: 60, help: 'Absolute deadline per request in seconds (connect + headers + body); a retry resumes where it stopped' },
    'max-depth': { type: 'int', default: 10, min: 0, help: 'Deepest folder level followed below the start URL' },
    'max-file-bytes': { type: 'string', default: '20GB', help: 'Body cap per file' },
    'allow-private-addresses': { type: 'bool', default: false, help: 'Allow loopback/private/link-local addresses (tests, local mirrors)' },
    'dry-run': { type: 'bool', default: false, help: 'Crawl and print the manifest lines of what would be fetched; download nothing' },
  },
  epilog: `Writes DIR/<path> for each file (partial data in <path>.part until complete), DIR/_manifest.jsonl
and, while it runs, the lock DIR/${LOCK_NAME} (a second run on DIR stops with exit code 2). The manifest has
one line per matched file: {"url","path","size","status","error"} with status downloaded,
already_complete, failed or planned (dry run). Exit code 0 only when every matched file is complete.

Example:
  npx tsx download_csv/run.ts --url http://the-eye.eu/eleuther_staging/cah/ --output-folder csv --include '*.csv'`,
});

type ManifestStatus = FileDownloadStatus | 'failed' | 'planned';

interface ManifestLine {
  url: string;
  path: string;
  size: number | null;
  status: ManifestStatus;
  error: string | null;
}

type Flags = ReturnType<typeof cli.parse>['flags'];

/** Checks the flags the parser cannot; throws a CliError (one line, exit 2) before any work. */
export function checkFlags(flags: Flags): { maxBytes: number } {
  let start: URL;
  try {
    start = new URL(flags.url);
  } catch {
    throw new CliError(`--url: "${flags.url}" is not a URL; write e.g. http://host/path/`);
  }
  if (start.protocol !== 'http:' && start.protocol !== 'https:') {
    throw new CliError(`--url: "${flags.url}" is not an http:// or https:// URL`);
  }
  if (!(flags.timeout > 0)) throw new CliError(`--timeout must be more than 0 seconds, got ${flags.timeout}`);
  if (flags.include.length === 0 || flags.include.some((p) => p.trim() === '')) {
    throw new CliError(`--include: "${flags.include.join(',')}" holds an empty pattern, which matches nothing; write e.g. '*.csv'`);
  }
  if (flags.outputFolder.trim() === '') throw new CliError('--output-folder must not be empty');
  return { maxBytes: byteSizeFlag('--max-file-bytes', flags.maxFileBytes) };
}

/**
 * Local names this tool uses for itself: the manifest and lock at the top, temp files of atomic
 * writes, and the partial-download files beside each file. A remote file with such a name would
 * overwrite ours (or be overwritten), so it is refused.
 */
function reservedName(path: string): string | null {
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (path === '_manifest.jsonl' || path === LOCK_NAME) return `${path} is this tool's own file in the output folder`;
  if (name.startsWith(TEMP_PREFIX)) return `names starting with ${TEMP_PREFIX} are this tool's temporary files`;
  if (/\.part(\.json(\.tmp)?)?$/.test(name)) return 'names ending in .part / .part.json are where this tool keeps partial downloads';
  return null;
}

const sizeOrNull = async (path: string): Promise<number | null> => {
  try {
    return (await stat(path)).size;
  } catch {
    return null;
  }
};

export async function main(argv: string[]): Promise<number> {
  const { flags } = cli.run(argv);
  const { maxBytes } = exitOnCliError(() => checkFlags(flags));
  const started = Date.now();
  const outDir = resolve(flags.outputFolder);
  // One run per folder: a second would rewrite the first one's .part files under it.
  const lock = flags.dryRun ? null : await lockOutputOrExit(outDir);
  const client = new HttpClient({
    allowPrivateAddresses: flags.allowPrivateAddresses,
    connectionsPerHost: Math.max(1, flags.parallel),
    userAgent: 'cah-prepro-download-csv/0.1',
  });
  const timeoutMs = flags.timeout * 1000;
  try {
    log.info(`crawling ${flags.url} ...`);
    const crawl = await crawlListing(client, flags.url, {
      timeoutMs,
      retries: flags.retries,
      maxDepth: flags.maxDepth,
      parallel: flags.parallel,
    });
    const include = makeIncludeFilter(flags.include);
    const matched = crawl.files.filter((f) => include(f.path));
    log.info(
      `listing: ${crawl.folders} folders read, ${crawl.files.length} files seen, ${matched.length} match ${flags.include.join(',')}` +
        (crawl.errors.length ? `, ${crawl.errors.length} listings unreadable` : ''),
    );

    if (flags.dryRun) {
      for (const f of matched) {
        const line: ManifestLine = { url: f.url, path: f.path, size: f.size ?? null, status: 'planned', error: null };
        process.stdout.write(JSON.stringify(line) + '\n');
      }
      return crawl.errors.length === 0 ? 0 : 1;
    }

    const listedBytes = matched.every((f) => f.size !== undefined) ? matched.reduce((s, f) => s + (f.size ?? 0), 0) : undefined;
    const progress = new Progress({ label: 'download_csv', total: matched.length, totalBytes: listedBytes, unit: 'files' });
    const lines: ManifestLine[] = new Array(matched.length);
    // Each local path has one writer: two URLs on one path would overwrite each other (and two
    // writers renaming onto one .part could leave a request hanging).
    const claimed = new Map<string, string>();
    const refuse = (f: (typeof matched)[number], i: number, error: string): void => {
      log.error(`${f.url}: ${error}; not downloaded`);
      lines[i] = { url: f.url, path: f.path, size: null, status: 'failed', error };
      progress.item(false);
    };
    await runPool(matched, Math.max(1, flags.parallel), async (f, i) => {
      const dest = resolve(outDir, f.path);
      if (!dest.startsWith(outDir + sep)) return refuse(f, i, 'path leaves the output folder');
      const reserved = reservedName(f.path);
      if (reserved !== null) return refuse(f, i, `local name ${f.path} refused: ${reserved}`);
      const other = claimed.get(dest);
      if (other !== undefined) return refuse(f, i, `same local path ${f.path} as ${other}`);
      claimed.set(dest, f.url);
      try {
        const r = await downloadFile(client, f.url, dest, {
          timeoutMs,
          retries: flags.retries,
          maxBytes,
          listedSize: f.size,
          onBytes: (n) => progress.addBytes(n),
          onRetry: (e, n) => log.warn(`${f.url}: ${e.message}; retry ${n}/${flags.retries}`),
        });
        lines[i] = { url: f.url, path: f.path, size: r.size, status: r.status, error: null };
        progress.item(true);
      } catch (err) {
        const error = errorMessage(err);
        const permanent = err instanceof LocalFileError || (err instanceof HttpError && !isRetryable(err));
        if (permanent) {
          log.error(`${f.url}: ${error}; not retried (a rerun fails the same way until this is fixed)`);
        } else {
          const kept = (await sizeOrNull(`${dest}.part`)) ?? 0;
          const partial = kept > 0 ? `; ${formatBytes(kept)} of partial data is kept in ${f.path}.part and resumed` : '';
          log.error(`${f.url}: ${error}; rerun the same command to retry${partial}`);
        }
        lines[i] = { url: f.url, path: f.path, size: null, status: 'failed', error };
        progress.item(false);
      }
    });
    progress.stop();

    await writeFileAtomic(resolve(outDir, '_manifest.jsonl'), lines.map((l) => JSON.stringify(l)).join('\n') + (lines.length ? '\n' : ''));
    const count = (s: ManifestStatus): number => lines.filter((l) => l.status === s).length;
    const bytes = lines.reduce((s, l) => s + (l.size ?? 0), 0);
    const ok = count('failed') === 0 && crawl.errors.length === 0;
    log.info(
      [
        `summary: ${matched.length} files matched in ${crawl.folders} folders`,
        `  downloaded:       ${count('downloaded')}`,
        `  already complete: ${count('already_complete')}`,
        `  failed:           ${count('failed')}`,
        `  unreadable listings: ${crawl.errors.length}`,
        `  bytes on disk:    ${formatBytes(bytes)}`,
        `  time:             ${formatDuration((Date.now() - started) / 1000)}`,
        `  manifest:         ${resolve(outDir, '_manifest.jsonl')}`,
        ok ? 'done: every matched file is complete' : 'incomplete: rerun the same command to retry what failed',
      ].join('\n'),
    );
    return ok ? 0 : 1;
  } finally {
    await client.close();
    // Released here too, not only at exit: main() also runs in-process (tests, the demo).
    lock?.release();
  }
}

if (isMainModule(import.meta.url)) process.exitCode = await main(process.argv.slice(2));
