// Breadth-first crawl of a directory listing: every folder below the start URL once, bounded in
// depth, with listings fetched in parallel. Yields the files found; never leaves the tree.
import type { HttpClient } from '../lib/http/client.ts';
import { log } from '../lib/log.ts';
import { looksLikeLoop, parseListing } from './listing.ts';
import { normalizeUrl, relativePath } from './local-path.ts';

export interface FoundFile {
  url: string;
  /** Path below the start URL, `/`-separated, one-to-one with the URL (local-path.ts). */
  path: string;
  size?: number;
}

export interface CrawlOptions {
  timeoutMs: number;
  retries: number;
  maxDepth: number;
  parallel: number;
  /** Cap on one listing page's size. */
  maxListingBytes?: number;
}

export interface CrawlResult {
  files: FoundFile[];
  folders: number;
  /** Listings that could not be read: the files below them are unknown. */
  errors: Array<{ url: string; error: string }>;
  skippedLoops: string[];
}

/** Normalises the start URL: a listing root always ends in `/`. */
export function rootUrl(start: string): URL {
  const u = normalizeUrl(new URL(start));
  u.hash = '';
  u.search = '';
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u;
}

export async function crawlListing(client: HttpClient, start: string, opts: CrawlOptions): Promise<CrawlResult> {
  let root = rootUrl(start);
  const seen = new Set<string>([root.href]);
  const files = new Map<string, FoundFile>();
  const errors: CrawlResult['errors'] = [];
  const skippedLoops: string[] = [];
  let folders = 0;
  let level: URL[] = [root];

  for (let depth = 0; level.length > 0; depth++) {
    const next: URL[] = [];
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < level.length) {
        const dir = level[i++]!;
        let html: string;
        let page: URL;
        try {
          const res = await client.get(dir.href, {
            timeoutMs: opts.timeoutMs,
            retries: opts.retries,
            maxBytes: opts.maxListingBytes ?? 64 * 1024 * 1024,
          });
          html = res.body.toString('utf8');
          page = normalizeUrl(new URL(res.url));
        } catch (err) {
          const error = err instanceof Error ? err.message : String(err);
          errors.push({ url: dir.href, error });
          log.error(`cannot read listing ${dir.href}: ${error}`);
          continue;
        }
        folders++;
        if (depth === 0 && page.href !== root.href && page.pathname.endsWith('/')) {
          // The start URL redirected (e.g. to add its slash): the tree is where it landed.
          root = page;
          seen.add(root.href);
        }
        for (const link of parseListing(html, page, root)) {
          if (link.isDir) {
            if (seen.has(link.url.href)) continue;
            seen.add(link.url.href);
            const rel = relativePath(root, link.url);
            if (depth + 1 > opts.maxDepth) {
              skippedLoops.push(link.url.href);
              log.warn(`not descending into ${link.url.href}: deeper than --max-depth ${opts.maxDepth}`);
            } else if (looksLikeLoop(rel)) {
              skippedLoops.push(link.url.href);
              log.warn(`not descending into ${link.url.href}: its path repeats itself (a symlink loop?)`);
            } else next.push(link.url);
          } else if (!files.has(link.url.href)) {
            const path = relativePath(root, link.url);
            files.set(link.url.href, { url: link.url.href, path, ...(link.size !== undefined ? { size: link.size } : {}) });
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.parallel, level.length) }, worker));
    level = next;
  }
  return { files: [...files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)), folders, errors, skippedLoops };
}
