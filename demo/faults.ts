// Misbehaving image URLs for tests and the demo: /faults/<kind>/<n> answers the way broken or hostile
// servers on the real web do (errors, rate limits, resets, trickles, endless or lying bodies, bombs,
// redirect tricks, opt-out headers). FAULT_KINDS says what the image downloader must end with for each,
// so tests and the demo check the same table.
//
// Register on the crawl host: host.addRoute('/faults/', faultsRoute()).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants as zlibConstants, crc32 as zlibCrc32, deflateRawSync, gzipSync } from 'node:zlib';
import sharp from 'sharp';
import type { RouteHandler } from './crawl-host.ts';
import { Rng } from '../lib/random.ts';

export type FaultKind =
  | 'ok'
  | 'redirect-ok'
  | '404'
  | '500'
  | '429-then-ok'
  | '429-always'
  | '503-retry-after-long'
  | 'reset'
  | 'close-early'
  | 'slow-headers'
  | 'slow-drip'
  | 'endless'
  | 'truncated'
  | 'short-length'
  | 'huge-declared'
  | 'huge-undeclared'
  | 'bomb'
  | 'html'
  | 'redirect-loop'
  | 'redirect-metadata'
  | 'redirect-private'
  | 'robots-noai'
  | 'robots-ours'
  | 'robots-otherbot'
  | 'http10-length'
  | 'http10-close'
  | 'close-slow-reader'
  | 'fin-after-headers'
  | 'chunked-trailers'
  | 'gzip-image'
  | 'gzip-csv'
  | 'early-hints'
  | 'two-lengths'
  | 'non-utf8-header'
  | 'one-byte-writes';

export type SampleStatus = 'success' | 'failed_to_download' | 'failed_to_resize';

export interface FaultExpectation {
  description: string;
  /**
   * What ImageDownloader.download ends with under the default options (10 s timeout, 50 MB cap,
   * default X-Robots-Tag directives, no token) and an address policy that allows loopback only.
   */
  download: { ok: true } | { ok: false; error: string | RegExp };
  /** The sample's img2dataset status once the resizer has seen the bytes. */
  status: SampleStatus;
  /** Ends only when the request deadline runs out. */
  waitsForDeadline?: boolean;
  /** A download must be exactly these bytes (faultBody), whatever the framing on the wire. */
  exactBody?: true;
}

const REDIRECT_LOOP =
  'HTTP Error 302: The HTTP server returned a redirect error that would lead to an infinite loop.\nThe last 30x error message was:\nFound';
const REFUSED = /^refused to connect to .*pass --allow-private-addresses to allow it$/;
const TOO_LARGE = /^image is larger than the --max-image-bytes limit of \d+ bytes$/;
const INCOMPLETE = /^IncompleteRead\(\d+ bytes read, \d+ more expected\)$/;

export const FAULT_KINDS: Readonly<Record<FaultKind, FaultExpectation>> = {
  ok: { description: 'a 64x64 JPEG', download: { ok: true }, status: 'success', exactBody: true },
  'redirect-ok': { description: 'three 302 hops, then the JPEG', download: { ok: true }, status: 'success', exactBody: true },
  '404': { description: '404 Not Found', download: { ok: false, error: 'HTTP Error 404: Not Found' }, status: 'failed_to_download' },
  '500': {
    description: '500 Internal Server Error',
    download: { ok: false, error: 'HTTP Error 500: Internal Server Error' },
    status: 'failed_to_download',
  },
  '429-then-ok': {
    description: 'first request 429 with Retry-After: 1, then the JPEG (waited out inside the deadline)',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  '429-always': {
    description: '429 with Retry-After: 1 on every request',
    download: { ok: false, error: 'HTTP Error 429: Too Many Requests' },
    status: 'failed_to_download',
  },
  '503-retry-after-long': {
    description: '503 with Retry-After: 3600, longer than any deadline: fails at once',
    download: { ok: false, error: 'HTTP Error 503: Service Unavailable' },
    status: 'failed_to_download',
  },
  reset: {
    description: 'half a status line, then a TCP reset',
    // A client that reads the partial headers before the reset arrives sees ECONNRESET; one that was
    // descheduled (a loaded machine) finds data and reset queued together, and the kernel reports an
    // end of stream after the data. A client stalled 50 ms after
    // each request got the second in 11 of 30 tries, so both are right here; nothing else is.
    download: { ok: false, error: /^(\[Errno 104\] Connection reset by peer|Remote end closed connection without response)$/ },
    status: 'failed_to_download',
  },
  'close-early': {
    description: 'the connection is closed before any response',
    download: { ok: false, error: 'Remote end closed connection without response' },
    status: 'failed_to_download',
  },
  'slow-headers': {
    description: 'accepts the request and never answers',
    download: { ok: false, error: 'timed out' },
    status: 'failed_to_download',
    waitsForDeadline: true,
  },
  'slow-drip': {
    description: '200 with headers, then one byte every 500 ms forever',
    download: { ok: false, error: 'timed out' },
    status: 'failed_to_download',
    waitsForDeadline: true,
  },
  endless: {
    description: '200, chunked, bytes as fast as the client reads, forever',
    download: { ok: false, error: TOO_LARGE },
    status: 'failed_to_download',
  },
  truncated: {
    description: 'Content-Length of the whole JPEG, half of it sent, then the connection closes',
    download: { ok: false, error: INCOMPLETE },
    status: 'failed_to_download',
  },
  'short-length': {
    description: 'Content-Length of the JPEG but trailing junk after it: the declared bytes are the image',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  'huge-declared': {
    description: 'Content-Length over the cap (the body is really sent)',
    download: { ok: false, error: TOO_LARGE },
    status: 'failed_to_download',
  },
  'huge-undeclared': {
    description: 'chunked body over the cap',
    download: { ok: false, error: TOO_LARGE },
    status: 'failed_to_download',
  },
  bomb: {
    description: 'a valid 1-bit PNG of about 110 kB whose header says 30000x30000',
    download: { ok: true },
    status: 'failed_to_resize',
  },
  html: { description: 'an HTML page served as the image', download: { ok: true }, status: 'failed_to_resize' },
  'redirect-loop': { description: '302 to itself', download: { ok: false, error: REDIRECT_LOOP }, status: 'failed_to_download' },
  'redirect-metadata': {
    description: '302 to the cloud metadata endpoint http://169.254.169.254/latest/meta-data/',
    download: { ok: false, error: REFUSED },
    status: 'failed_to_download',
  },
  'redirect-private': {
    description: '302 to http://10.0.0.1/x',
    download: { ok: false, error: REFUSED },
    status: 'failed_to_download',
  },
  'robots-noai': {
    description: 'the JPEG with X-Robots-Tag: noai',
    download: { ok: false, error: 'Use of image disallowed by X-Robots-Tag directive' },
    status: 'failed_to_download',
  },
  'robots-ours': {
    description: 'the JPEG with X-Robots-Tag: img2dataset: noimageai (scoped to our bot)',
    download: { ok: false, error: 'Use of image disallowed by X-Robots-Tag directive' },
    status: 'failed_to_download',
  },
  'robots-otherbot': {
    description: 'the JPEG with X-Robots-Tag: otherbot: noai (scoped to another bot)',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  // What the HTTP/1 framing of real servers does to clients (undici#5360 and its kin).
  'http10-length': {
    description: 'an HTTP/1.0 response with Content-Length, then the server closes',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  'http10-close': {
    description: 'an HTTP/1.0 response without Content-Length: the body ends when the server closes',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  'close-slow-reader': {
    description: 'a 640x640 noise JPEG (~340 kB) sent whole with Connection: close and FIN at once, however slowly the client reads',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  'fin-after-headers': {
    description: 'headers with the Content-Length of the JPEG, then FIN and no body',
    download: { ok: false, error: INCOMPLETE },
    status: 'failed_to_download',
  },
  'chunked-trailers': {
    description: 'the JPEG in three chunks, then trailer fields after the last chunk',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  'gzip-image': {
    description: 'the JPEG with Content-Encoding: gzip although the client asked for identity',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  'gzip-csv': {
    description: 'a CSV of image URLs and captions with Content-Encoding: gzip (for download_csv; not an image)',
    download: { ok: true },
    status: 'failed_to_resize',
    exactBody: true,
  },
  'early-hints': {
    description: 'a 103 Early Hints interim response, then the 200 with the JPEG',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  'two-lengths': {
    description: 'two different Content-Length headers (a request-smuggling shape): no body can be trusted',
    download: { ok: false, error: /^malformed response: .*content-length/i },
    status: 'failed_to_download',
  },
  'non-utf8-header': {
    description: 'header values with Latin-1 bytes that are not UTF-8 (Content-Disposition, X-Title)',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
  'one-byte-writes': {
    description: 'status line, headers and body written one byte per TCP segment',
    download: { ok: true },
    status: 'success',
    exactBody: true,
  },
};

export interface FaultsOptions {
  /** Path prefix the route is registered under. */
  prefix?: string;
  seed?: number;
  /** Size of the huge bodies; above the 50 MB default cap unless a test lowers both. */
  hugeBytes?: number;
  /** Retry-After of the 429 kinds, in seconds. */
  retryAfterSeconds?: number;
  metadataUrl?: string;
  privateUrl?: string;
  /** Called with each request's path and User-Agent (tests check what arrived). */
  onRequest?: (path: string, userAgent: string | undefined) => void;
}

export function faultUrl(origin: string, kind: FaultKind, n = 0, prefix = '/faults/'): string {
  return `${origin}${prefix}${kind}/${n}`;
}

const imageCache = new Map<string, Promise<Buffer>>();

/** A small JPEG whose colour depends on seed and n. */
export function faultImage(seed: number, n: number, size = 64): Promise<Buffer> {
  const k = `${seed}/${n}/${size}`;
  let p = imageCache.get(k);
  if (!p) {
    const rng = new Rng(seed).fork(`fault-image-${n}`);
    const background = { r: rng.int(0, 255), g: rng.int(0, 255), b: rng.int(0, 255) };
    p = sharp({ create: { width: size, height: size, channels: 3, background } }).jpeg({ quality: 90 }).toBuffer();
    imageCache.set(k, p);
  }
  return p;
}

const noiseCache = new Map<string, Promise<Buffer>>();

/** A JPEG of random pixels (barely compressible): big enough to fill socket buffers. */
export function noiseImage(seed: number, n: number, side = 640): Promise<Buffer> {
  const k = `${seed}/${n}/${side}`;
  let p = noiseCache.get(k);
  if (!p) {
    const rng = new Rng(seed).fork(`noise-image-${n}`);
    const pixels = Buffer.alloc(side * side * 3);
    for (let i = 0; i < pixels.length; i++) pixels[i] = rng.int(0, 255);
    p = sharp(pixels, { raw: { width: side, height: side, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    noiseCache.set(k, p);
  }
  return p;
}

/** A small CSV in the crawl's shape, different per n (what the gzip-csv kind serves, decoded). */
export function faultCsv(n: number): Buffer {
  const rows = ['URL,TEXT,WIDTH,HEIGHT,LICENSE,NSFW,similarity'];
  for (let i = 0; i < 200; i++) rows.push(`https://example.com/${n}/${i}.jpg,"a photo, number ${i} of set ${n}",640,480,?,UNLIKELY,0.31${i % 10}`);
  return Buffer.from(rows.join('\n') + '\n');
}

/** The bytes a successful download of /faults/<kind>/<n> must hold (kinds with exactBody). */
export function faultBody(kind: FaultKind, n: number, seed = 0): Promise<Buffer> {
  if (kind === 'gzip-csv') return Promise.resolve(faultCsv(n));
  if (kind === 'close-slow-reader') return noiseImage(seed, n);
  return faultImage(seed, n);
}

export function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

// zlib.crc32 arrived in Node 20.15 / 22.2; keep a fallback for older 20.x.
const crcTable = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(buf: Buffer): number {
  if (typeof zlibCrc32 === 'function') return zlibCrc32(buf) >>> 0;
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

let bombPromise: Promise<Buffer> | undefined;

/**
 * A complete, valid PNG of side x side black 1-bit pixels whose 112 MB of scanlines (for 30000)
 * deflate to about 110 kB; decoding it would need 900 MB+ of pixels. Built in milliseconds, not by
 * deflating 112 MB: the scanlines are all zero bytes, so one full-flushed deflate block of a slice
 * of them can be repeated (a full flush makes each copy independent of the one before), and the
 * zlib trailer's Adler-32 of n zeros is simply a = 1, b = n mod 65521.
 */
export function decompressionBomb(side = 30000): Promise<Buffer> {
  if (side === 30000 && bombPromise) return bombPromise;
  const rowBytes = 1 + Math.ceil(side / 8); // filter byte 0, then zero pixels
  let rowsPerBlock = Math.min(side, 1000);
  while (side % rowsPerBlock !== 0) rowsPerBlock--;
  const block = deflateRawSync(Buffer.alloc(rowsPerBlock * rowBytes), { level: 9, finishFlush: zlibConstants.Z_FULL_FLUSH });
  const finalBlock = Buffer.from([0x03, 0x00]); // an empty fixed-Huffman block with BFINAL set
  const total = side * rowBytes;
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE((((total % 65521) << 16) | 1) >>> 0, 0);
  const blocks: Buffer[] = [Buffer.from([0x78, 0xda])];
  for (let i = 0; i < side / rowsPerBlock; i++) blocks.push(block);
  blocks.push(finalBlock, adler);
  const p = Promise.resolve(oneBitGreyPng(side, side, Buffer.concat(blocks)));
  if (side === 30000) bombPromise = p;
  return p;
}

/** A 1-bit greyscale PNG of width x height around `zlibScanlines`, its filtered rows deflated (zlib format). */
export function oneBitGreyPng(width: number, height: number, zlibScanlines: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // greyscale
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, pngChunk('IHDR', ihdr), pngChunk('IDAT', zlibScanlines), pngChunk('IEND', Buffer.alloc(0))]);
}

const HTML = Buffer.from('<!doctype html>\n<html><head><title>Not an image</title></head><body><p>Page moved.</p></body></html>\n');

/** A response's wire bytes: status line, header lines, blank line, body as given. */
function rawResponse(statusLine: string, headerLines: string[], body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${statusLine}\r\n${headerLines.map((l) => `${l}\r\n`).join('')}\r\n`, 'latin1'), body]);
}

/** Streams `total` bytes (Infinity: forever) as fast as the client takes them; stops when it leaves. */
function pump(res: ServerResponse, total: number): void {
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  let sent = 0;
  const write = (): void => {
    while (!res.destroyed && sent < total) {
      const part = total - sent >= chunk.length ? chunk : chunk.subarray(0, total - sent);
      sent += part.length;
      if (!res.write(part)) {
        res.once('drain', write);
        return;
      }
    }
    if (!res.destroyed) res.end();
  };
  write();
}

export function faultsRoute(opts: FaultsOptions = {}): RouteHandler {
  const prefix = opts.prefix ?? '/faults/';
  const seed = opts.seed ?? 0;
  const hugeBytes = opts.hugeBytes ?? 64 * 1024 * 1024;
  const retryAfter = opts.retryAfterSeconds ?? 1;
  const metadataUrl = opts.metadataUrl ?? 'http://169.254.169.254/latest/meta-data/';
  const privateUrl = opts.privateUrl ?? 'http://10.0.0.1/x';
  const seen = new Map<string, number>();
  // The costly bodies are made now, before any request's deadline starts ticking.
  void decompressionBomb();
  void noiseImage(seed, 0);

  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const path = decodeURIComponent(url.pathname);
    opts.onRequest?.(path, req.headers['user-agent']);
    const [kind = '', nText = '0'] = path.slice(prefix.length).split('/');
    const n = Number.parseInt(nText, 10) || 0;
    const count = (seen.get(path) ?? 0) + 1;
    seen.set(path, count);
    const image = (): Promise<Buffer> => faultImage(seed, n);
    const sendImage = async (extra: Record<string, string> = {}): Promise<void> => {
      const body = await image();
      res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': body.length, ...extra });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const redirect = (location: string): void => {
      res.writeHead(302, { location });
      res.end();
    };

    switch (kind as FaultKind) {
      case 'ok':
        return sendImage();
      case 'redirect-ok': {
        const hop = Number(url.searchParams.get('hop') ?? '0');
        if (hop < 3) return redirect(`${prefix}redirect-ok/${n}?hop=${hop + 1}`);
        return sendImage();
      }
      case '404':
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found\n');
        return;
      case '500':
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('boom\n');
        return;
      case '429-then-ok':
        if (count === 1) {
          res.writeHead(429, { 'retry-after': String(retryAfter), 'content-type': 'text/plain' });
          res.end('slow down\n');
          return;
        }
        return sendImage();
      case '429-always':
        res.writeHead(429, { 'retry-after': String(retryAfter), 'content-type': 'text/plain' });
        res.end('slow down\n');
        return;
      case '503-retry-after-long':
        res.writeHead(503, { 'retry-after': '3600', 'content-type': 'text/plain' });
        res.end('maintenance\n');
        return;
      case 'reset':
        // The reset only reads as ECONNRESET once the partial headers have left.
        req.socket.write('HTTP/1.1 200 OK\r\nContent-Type: ima', () => {
          setTimeout(() => req.socket.resetAndDestroy(), 20);
        });
        return;
      case 'close-early':
        req.socket.destroy();
        return;
      case 'slow-headers':
        // Never answers; the server's close() ends the socket.
        return;
      case 'slow-drip': {
        res.writeHead(200, { 'content-type': 'image/jpeg' });
        const timer = setInterval(() => {
          if (!res.destroyed) res.write(Buffer.from([0xff]));
        }, 500);
        res.on('close', () => clearInterval(timer));
        res.write(Buffer.from([0xff]));
        return;
      }
      case 'endless':
        res.writeHead(200, { 'content-type': 'image/jpeg' });
        pump(res, Infinity);
        return;
      case 'truncated': {
        const body = await image();
        res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': body.length });
        res.write(body.subarray(0, Math.floor(body.length / 2)), () => req.socket.destroy());
        return;
      }
      case 'short-length': {
        const body = await image();
        // Framing by hand: node's response would refuse to send more than Content-Length.
        req.socket.write(
          `HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
        );
        req.socket.end(Buffer.concat([body, Buffer.from('trailing junk the Content-Length does not cover\n')]));
        return;
      }
      case 'huge-declared':
        res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': hugeBytes });
        pump(res, hugeBytes);
        return;
      case 'huge-undeclared':
        res.writeHead(200, { 'content-type': 'image/jpeg' });
        pump(res, hugeBytes);
        return;
      case 'bomb': {
        const body = await decompressionBomb();
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': body.length });
        res.end(body);
        return;
      }
      case 'html':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': HTML.length });
        res.end(HTML);
        return;
      case 'redirect-loop':
        return redirect(`${prefix}redirect-loop/${n}`);
      case 'redirect-metadata':
        return redirect(metadataUrl);
      case 'redirect-private':
        return redirect(privateUrl);
      case 'robots-noai':
        return sendImage({ 'x-robots-tag': 'noai' });
      case 'robots-ours':
        return sendImage({ 'x-robots-tag': 'img2dataset: noimageai' });
      case 'robots-otherbot':
        return sendImage({ 'x-robots-tag': 'otherbot: noai' });
      // The framing kinds write the wire bytes by hand: node's response would correct them.
      case 'http10-length': {
        const body = await image();
        req.socket.end(rawResponse('HTTP/1.0 200 OK', ['Content-Type: image/jpeg', `Content-Length: ${body.length}`], body));
        return;
      }
      case 'http10-close':
        req.socket.end(rawResponse('HTTP/1.0 200 OK', ['Content-Type: image/jpeg'], await image()));
        return;
      case 'close-slow-reader': {
        const body = await noiseImage(seed, n);
        req.socket.end(rawResponse('HTTP/1.1 200 OK', ['Content-Type: image/jpeg', `Content-Length: ${body.length}`, 'Connection: close'], body));
        return;
      }
      case 'fin-after-headers': {
        const body = await image();
        req.socket.end(rawResponse('HTTP/1.1 200 OK', ['Content-Type: image/jpeg', `Content-Length: ${body.length}`], Buffer.alloc(0)));
        return;
      }
      case 'chunked-trailers': {
        const body = await image();
        const third = Math.ceil(body.length / 3);
        const chunks = [0, 1, 2].map((i) => body.subarray(i * third, (i + 1) * third)).filter((c) => c.length > 0);
        const framed = Buffer.concat([
          ...chunks.flatMap((c) => [Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n')]),
          Buffer.from('0\r\nX-Checksum: 5f3c\r\nServer-Timing: total;dur=12\r\n\r\n'),
        ]);
        req.socket.end(rawResponse('HTTP/1.1 200 OK', ['Content-Type: image/jpeg', 'Transfer-Encoding: chunked', 'Trailer: X-Checksum, Server-Timing', 'Connection: close'], framed));
        return;
      }
      case 'gzip-image':
      case 'gzip-csv': {
        const plain = kind === 'gzip-csv' ? faultCsv(n) : await image();
        const body = gzipSync(plain);
        const type = kind === 'gzip-csv' ? 'text/csv' : 'image/jpeg';
        res.writeHead(200, { 'content-type': type, 'content-encoding': 'gzip', 'content-length': body.length, vary: 'Accept-Encoding' });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      case 'early-hints': {
        const body = await image();
        req.socket.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n');
        setTimeout(() => {
          if (!req.socket.destroyed) req.socket.end(rawResponse('HTTP/1.1 200 OK', ['Content-Type: image/jpeg', `Content-Length: ${body.length}`, 'Connection: close'], body));
        }, 20);
        return;
      }
      case 'two-lengths': {
        const body = await image();
        req.socket.end(rawResponse('HTTP/1.1 200 OK', ['Content-Type: image/jpeg', `Content-Length: ${body.length}`, `Content-Length: ${body.length + 10}`, 'Connection: close'], body));
        return;
      }
      case 'non-utf8-header': {
        const body = await image();
        const head = Buffer.concat([
          Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: ${body.length}\r\nConnection: close\r\n`),
          Buffer.from('Content-Disposition: inline; filename="caf\xe9 cr\xe8me.jpg"\r\nX-Title: \xff\xfe\xc3(\r\n\r\n', 'latin1'),
        ]);
        req.socket.end(Buffer.concat([head, body]));
        return;
      }
      case 'one-byte-writes': {
        const body = await image();
        const wire = rawResponse('HTTP/1.1 200 OK', ['Content-Type: image/jpeg', `Content-Length: ${body.length}`, 'Connection: close'], body);
        const sock = req.socket;
        sock.setNoDelay(true);
        let i = 0;
        const next = (): void => {
          if (sock.destroyed) return;
          if (i >= wire.length) {
            sock.end();
            return;
          }
          sock.write(wire.subarray(i, ++i), () => setImmediate(next));
        };
        next();
        return;
      }
      default:
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end(`unknown fault kind ${kind}\n`);
    }
  };
}
