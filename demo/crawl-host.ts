// The synthetic crawl host that tests, benchmarks and the demo use: nested autoindex listings of
// crawling@home CSVs under /cah/, with the traps real listings have (sort links, parent links,
// links leaving the tree, a symlink loop), Range/If-Range support, optional throttling, and a
// byte count per path. Other stages register more routes (images, faulty URLs) with addRoute.
//
// As a CLI: npx tsx demo/crawl-host.ts [--port 8080] [--host 127.0.0.1] [--seed 0] [--files 12] [--rows 200]
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { defineCli, isMainModule } from '../lib/cli.ts';
import { generateCrawlCsvs, type CsvFile } from './crawl-csv.ts';
import { renderListing, type ListingEntry, type ListingStyle } from './listing-html.ts';

export const CRAWL_ROOT = '/cah/';

export interface CrawlHostOptions {
  seed?: number;
  port?: number;
  host?: string;
  files?: number;
  rowsPerFile?: number;
  /** Per-response throttle, so a test can kill a download half-way. */
  throttleBytesPerSec?: number;
  /** List a CSV that the server answers with 404. */
  missingCsv?: boolean;
  /** Share of rows pointing at faulty URLs (`/faults/<kind>/<n>`, served once faultsRoute is added). */
  faultRate?: number;
  /** Replace the generated CSVs with these files (path relative to /cah/ -> bytes). */
  staticFiles?: Map<string, Buffer>;
}

export type RouteHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => void | Promise<void>;

export interface TrafficStats {
  /** Body bytes handed to the socket, per request path. */
  bytesByPath: Map<string, number>;
  requestsByPath: Map<string, number>;
  totalBytes(): number;
  reset(): void;
}

export interface CrawlHost {
  /** e.g. http://127.0.0.1:41234 */
  origin: string;
  /** The listing root, e.g. http://127.0.0.1:41234/cah/ */
  crawlUrl: string;
  port: number;
  csvFiles: CsvFile[];
  /** Every served file under /cah/ (CSVs and the other job files), path relative to /cah/. */
  files: Map<string, Buffer>;
  /** Paths (relative to /cah/) that are listed but answer 404. */
  missing: string[];
  stats: TrafficStats;
  addRoute(prefix: string, handler: RouteHandler): void;
  close(): Promise<void>;
}

const LOOP_DIR = 'loop/';

function etagOf(buf: Buffer): string {
  return `"${createHash('sha1').update(buf).digest('hex').slice(0, 16)}"`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Writes a body, throttled when asked, counting bytes; stops if the client goes away. */
async function sendBody(res: ServerResponse, body: Buffer, bytesPerSec: number | undefined, count: (n: number) => void): Promise<void> {
  if (!bytesPerSec) {
    count(body.length);
    res.end(body);
    return;
  }
  const chunk = Math.max(1024, Math.floor(bytesPerSec / 20));
  for (let off = 0; off < body.length; off += chunk) {
    if (res.destroyed) return;
    const part = body.subarray(off, off + chunk);
    count(part.length);
    if (!res.write(part)) await new Promise<void>((r) => { res.once('drain', r); res.once('close', r); });
    await sleep((1000 * part.length) / bytesPerSec);
  }
  res.end();
}

/** Serves a file with HEAD, Range and If-Range the way static servers do. */
export async function serveFile(
  req: IncomingMessage,
  res: ServerResponse,
  body: Buffer,
  opts: { contentType: string; throttleBytesPerSec?: number; count: (n: number) => void },
): Promise<void> {
  const etag = etagOf(body);
  const lastModified = 'Wed, 18 Aug 2021 12:00:00 GMT';
  const headers: Record<string, string | number> = {
    'content-type': opts.contentType,
    'accept-ranges': 'bytes',
    etag,
    'last-modified': lastModified,
  };
  let start = 0;
  let end = body.length - 1;
  let status = 200;
  const range = req.headers.range;
  const ifRange = req.headers['if-range'];
  const rangeValid = ifRange === undefined || ifRange === etag || ifRange === lastModified;
  if (range && rangeValid) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (m && (m[1] !== '' || m[2] !== '')) {
      if (m[1] === '') {
        start = Math.max(0, body.length - Number(m[2]));
      } else {
        start = Number(m[1]);
        if (m[2] !== '') end = Math.min(end, Number(m[2]));
      }
      if (start >= body.length || start > end) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` });
        res.end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${body.length}`;
    }
  }
  const slice = body.subarray(start, end + 1);
  headers['content-length'] = slice.length;
  res.writeHead(status, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  await sendBody(res, slice, opts.throttleBytesPerSec, opts.count);
}

export async function startCrawlHost(opts: CrawlHostOptions = {}): Promise<CrawlHost> {
  const routes: Array<[string, RouteHandler]> = [];
  const stats: TrafficStats = {
    bytesByPath: new Map(),
    requestsByPath: new Map(),
    totalBytes() {
      let t = 0;
      for (const v of this.bytesByPath.values()) t += v;
      return t;
    },
    reset() {
      this.bytesByPath.clear();
      this.requestsByPath.clear();
    },
  };
  const files = new Map<string, Buffer>();
  const missing: string[] = [];
  let csvFiles: CsvFile[] = [];
  // Listing styles by depth, so every crawl meets all three.
  const styleFor = (dir: string): ListingStyle => (['apache', 'nginx', 'lighttpd'] as const)[dir.split('/').length % 3]!;

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = decodeURIComponent(url.pathname);
    stats.requestsByPath.set(path, (stats.requestsByPath.get(path) ?? 0) + 1);
    const count = (n: number): void => {
      stats.bytesByPath.set(path, (stats.bytesByPath.get(path) ?? 0) + n);
    };
    const handle = async (): Promise<void> => {
      for (const [prefix, handler] of routes) {
        if (path.startsWith(prefix)) return handler(req, res, url);
      }
      if (path.startsWith(CRAWL_ROOT)) return serveCrawl(req, res, path.slice(CRAWL_ROOT.length), count);
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    };
    handle().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    });
  });

  async function serveCrawl(req: IncomingMessage, res: ServerResponse, rel: string, count: (n: number) => void): Promise<void> {
    if (rel === '' || rel.endsWith('/')) {
      const html = listing(rel);
      if (html === null) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found\n');
        return;
      }
      const body = Buffer.from(html, 'utf8');
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': body.length });
      count(body.length);
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const file = files.get(rel);
    if (!file) {
      // A directory asked for without its slash gets the redirect real servers send.
      if (listing(`${rel}/`) !== null) {
        res.writeHead(301, { location: `${CRAWL_ROOT}${rel}/` });
        res.end();
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    const contentType = rel.endsWith('.gz') ? 'application/gzip' : rel.endsWith('.csv') ? 'text/csv' : 'application/octet-stream';
    await serveFile(req, res, file, { contentType, throttleBytesPerSec: opts.throttleBytesPerSec, count });
  }

  /** The listing of a directory (relative to /cah/, ending in `/`), or null if there is none. */
  function listing(dir: string): string | null {
    if (dir.startsWith(LOOP_DIR)) {
      // A symlink pointing at its own parent: every level lists itself again.
      return renderListing('nginx', `${CRAWL_ROOT}${dir}`, [{ href: LOOP_DIR, label: LOOP_DIR, isDir: true }]);
    }
    const children = new Map<string, ListingEntry>();
    for (const p of [...files.keys(), ...missing]) {
      if (!p.startsWith(dir)) continue;
      const rest = p.slice(dir.length);
      const slash = rest.indexOf('/');
      const name = slash >= 0 ? rest.slice(0, slash + 1) : rest;
      if (!children.has(name)) {
        children.set(name, { href: encodeURI(name), label: name, isDir: slash >= 0, size: slash >= 0 ? undefined : files.get(p)?.length ?? 1234 });
      }
    }
    if (children.size === 0 && dir !== '') return null;
    const entries = [...children.values()].sort((a, b) => a.label.localeCompare(b.label));
    if (dir === '') {
      // Traps at the top: a link out of the tree, one to another host, one to the same tree by
      // absolute path, and the symlink loop.
      entries.push(
        { href: '/elsewhere/', label: 'elsewhere/', isDir: true },
        { href: 'http://other-host.invalid/cah/', label: 'mirror/', isDir: true },
        { href: CRAWL_ROOT, label: 'this-folder-again/', isDir: true },
        { href: LOOP_DIR, label: LOOP_DIR, isDir: true },
      );
    } else {
      // Every subfolder also links back to the root by absolute path and to itself.
      entries.push({ href: CRAWL_ROOT, label: 'cah/', isDir: true }, { href: './', label: './', isDir: true });
    }
    return renderListing(styleFor(dir), `${CRAWL_ROOT}${dir}`, entries);
  }

  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const origin = `http://${opts.host ?? '127.0.0.1'}:${port}`;

  if (opts.staticFiles) {
    for (const [p, b] of opts.staticFiles) files.set(p, b);
  } else {
    csvFiles = generateCrawlCsvs({ seed: opts.seed, imageBaseUrl: origin, files: opts.files, rowsPerFile: opts.rowsPerFile, faultRate: opts.faultRate });
    for (const f of csvFiles) {
      files.set(f.path, f.content);
      // The other per-job files workers left beside the CSV; an include pattern must skip them.
      const job = f.path.replace(/[^/]+$/, '');
      files.set(`${job}image_embedding_dict.pkl`, Buffer.from(`pickle ${f.path}\n`));
      files.set(`${job}crawling_at_home.tfrecord`, Buffer.from(`tfrecord ${f.path}\n`));
    }
  }
  if (opts.missingCsv) missing.push('20210818/job-000/MISSING_ON_SERVER.csv');

  return {
    origin,
    crawlUrl: `${origin}${CRAWL_ROOT}`,
    port,
    csvFiles,
    files,
    missing,
    stats,
    addRoute(prefix, handler) {
      routes.push([prefix, handler]);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (isMainModule(import.meta.url)) {
  const cli = defineCli({
    command: 'npx tsx demo/crawl-host.ts',
    summary: 'Serve the synthetic crawling@home crawl (listings, CSVs) on a local port.',
    flags: {
      port: { type: 'int', default: 8080, help: 'Port to listen on (0 = any free port)' },
      host: { type: 'string', default: '127.0.0.1', help: 'Address to listen on' },
      seed: { type: 'int', default: 0, help: 'Seed of the generated crawl' },
      files: { type: 'int', default: 12, help: 'CSV files in the crawl' },
      rows: { type: 'int', default: 200, help: 'Rows per CSV file' },
    },
  });
  const { flags } = cli.run();
  const host = await startCrawlHost({ port: flags.port, host: flags.host, seed: flags.seed, files: flags.files, rowsPerFile: flags.rows });
  process.stdout.write(`crawl host listening: ${host.crawlUrl} (${host.files.size} files)\n`);
  const stop = (): void => void host.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
