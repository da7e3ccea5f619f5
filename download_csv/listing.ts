// Autoindex HTML (Apache, nginx, lighttpd) -> the links worth following: folders and files below
// the crawl root, without sort links, parent links, or links to other hosts.
import { normalizeUrl } from './local-path.ts';

export interface ListingLink {
  url: URL;
  isDir: boolean;
  /** Exact size in bytes when the listing gives one (nginx's default autoindex_exact_size). */
  size?: number;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

export function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

/** Every href of an HTML page, with the text up to the end of its line (for nginx sizes). */
function* anchors(html: string): Generator<{ href: string; tail: string }> {
  const re = /<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))[^>]*>([\s\S]*?)<\/a>([^\n]*)/gi;
  for (let m = re.exec(html); m; m = re.exec(html)) {
    yield { href: decodeEntities((m[1] ?? m[2] ?? m[3] ?? '').trim()), tail: m[5] ?? '' };
  }
}

/**
 * Links of a listing page that stay strictly below `root` (a URL ending in `/`). `page` is the
 * listing's own URL (after redirects), against which relative hrefs resolve.
 */
export function parseListing(html: string, page: URL, root: URL): ListingLink[] {
  const out = new Map<string, ListingLink>();
  for (const { href, tail } of anchors(html)) {
    if (href === '' || href.startsWith('#') || /^(mailto|javascript|data):/i.test(href)) continue;
    let url: URL;
    try {
      url = normalizeUrl(new URL(href, page));
    } catch {
      continue;
    }
    // Sort links (?C=N;O=D) and anything with a query are views of a listing, not new content.
    if (url.search !== '') continue;
    url.hash = '';
    if (url.origin !== root.origin) continue;
    if (!url.pathname.startsWith(root.pathname) || url.pathname === root.pathname) continue;
    if (url.pathname === page.pathname) continue;
    const isDir = url.pathname.endsWith('/');
    // Parent links point at or above the page's own folder.
    if (isDir && page.pathname.startsWith(url.pathname)) continue;
    const sizeToken = /\s(\d+)\s*$/.exec(tail.replace(/<[^>]*>/g, ''));
    const size = !isDir && sizeToken ? Number(sizeToken[1]) : undefined;
    out.set(url.href, { url, isDir, ...(size !== undefined ? { size } : {}) });
  }
  return [...out.values()];
}

/** True when a folder path ends in the same run of segments three times (a symlink loop). */
export function looksLikeLoop(relativeDir: string): boolean {
  const segs = relativeDir.split('/').filter(Boolean);
  for (let len = 1; len <= 3; len++) {
    if (segs.length < len * 3) break;
    const tail = segs.slice(-len).join('/');
    if (segs.slice(-2 * len, -len).join('/') === tail && segs.slice(-3 * len, -2 * len).join('/') === tail) return true;
  }
  return false;
}

/** Glob -> RegExp: `*` (no slash), `**` (any), `?`, `{a,b}`. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        re += '.*';
        i++;
        if (glob[i + 1] === '/') i++;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '{') {
      const end = glob.indexOf('}', i);
      if (end < 0) re += '\\{';
      else {
        re += `(?:${glob.slice(i + 1, end).split(',').map((a) => a.replace(/[.+^$()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')).join('|')})`;
        i = end;
      }
    } else re += c.replace(/[.+^$()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Matches a relative file path against patterns; a pattern without `/` matches the file name. */
export function makeIncludeFilter(patterns: readonly string[]): (relPath: string) => boolean {
  const compiled = patterns.map((p) => ({ re: globToRegExp(p), onName: !p.includes('/') }));
  return (relPath) => {
    const name = relPath.slice(relPath.lastIndexOf('/') + 1);
    return compiled.some(({ re, onName }) => re.test(onName ? name : relPath));
  };
}
