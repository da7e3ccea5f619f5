// URL -> local path, one-to-one: URLs that are equal under RFC 3986 are made one URL first, then
// each path segment becomes a file name with only those escapes decoded that cannot collide.
// Two different URLs therefore never share a file (issue 16, item 12).

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * RFC 3986 6.2.2: percent-escapes of unreserved characters are the characters themselves, and hex
 * digits are case-insensitive. So `same%2Ecsv`, `s%61me.csv` and `same.csv` are one URL, fetched
 * once; after this, two different paths are two different resources.
 */
export function normalizeUrl(u: URL): URL {
  const path = u.pathname.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(c) ? c : `%${hex.toUpperCase()}`;
  });
  if (path !== u.pathname) u.pathname = path;
  return u;
}

// Characters the URL parser always percent-encodes in a path: they never appear literally in a
// pathname, so writing them decoded cannot make two URLs one file name. Every other escape
// (`%2F`, `%25`, `%2B`, a control, a byte that is not UTF-8) stays as it is in the name.
const ALWAYS_ENCODED = new Set([' ', '"', '#', '<', '>', '?', '`', '{', '}']);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** One path segment of a normalised URL -> its file name; one-to-one (see ALWAYS_ENCODED). */
export function segmentToName(segment: string): string {
  return segment.replace(/(?:%[0-9A-F]{2})+/g, (run) => {
    const bytes = Buffer.from(run.replace(/%/g, ''), 'hex');
    let out = '';
    for (let i = 0; i < bytes.length; ) {
      const b = bytes[i]!;
      if (b < 0x80) {
        const c = String.fromCharCode(b);
        out += ALWAYS_ENCODED.has(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
        i++;
        continue;
      }
      const len = b >= 0xf0 && b < 0xf5 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 0;
      let ch: string | null = null;
      if (len > 0 && i + len <= bytes.length) {
        try {
          ch = utf8.decode(bytes.subarray(i, i + len));
        } catch {
          ch = null;
        }
      }
      // C1 controls and invalid sequences stay escaped.
      if (ch !== null && !/^[\u0080-\u009f]$/.test(ch)) {
        out += ch;
        i += len;
      } else {
        out += `%${b.toString(16).toUpperCase()}`;
        i++;
      }
    }
    return out;
  });
}

/** Path below the root, one file name per segment (see segmentToName). */
export function relativePath(root: URL, url: URL): string {
  const rel = url.pathname.slice(root.pathname.length);
  return rel.split('/').map(segmentToName).join('/');
}
