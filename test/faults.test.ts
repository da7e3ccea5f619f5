// demo/faults.ts serves what FAULT_KINDS describes, seen from a plain socket (no HttpClient), so
// the downloader tests rest on faults that really happen on the wire.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createInflate, gunzipSync } from 'node:zlib';
import sharp from 'sharp';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { decompressionBomb, FAULT_KINDS, faultBody, faultCsv, faultImage, faultsRoute, type FaultKind } from '../demo/faults.ts';

interface Raw {
  head: string;
  status: number;
  headers: Map<string, string[]>;
  body: Buffer;
  /** Everything that arrived, framing included. */
  wire: Buffer;
  /** Number of 'data' events (TCP reads). */
  reads: number;
  error?: string;
}

/** One HTTP/1.1 request on a fresh socket; collects whatever arrives until close or `waitMs`. */
function raw(port: number, path: string, waitMs = 1500): Promise<Raw> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const sock = connect(port, '127.0.0.1', () => {
      sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    });
    const timer = setTimeout(() => sock.destroy(), waitMs);
    let reads = 0;
    sock.on('data', (c: Buffer) => {
      reads++;
      chunks.push(c);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => (error = e.code));
    sock.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const head = split >= 0 ? all.subarray(0, split).toString('latin1') : all.toString('latin1');
      const headers = new Map<string, string[]>();
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) {
          const k = line.slice(0, i).toLowerCase();
          headers.set(k, [...(headers.get(k) ?? []), line.slice(i + 1).trim()]);
        }
      }
      resolve({
        head,
        status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0),
        headers,
        body: split >= 0 ? all.subarray(split + 4) : Buffer.alloc(0),
        wire: all,
        reads,
        error,
      });
    });
  });
}

describe('fault route', () => {
  let host: CrawlHost;
  const seen: Array<[string, string | undefined]> = [];
  before(async () => {
    host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
    host.addRoute('/faults/', faultsRoute({ hugeBytes: 200_000, onRequest: (p, ua) => seen.push([p, ua]) }));
  });
  after(() => host.close());

  test('every kind in FAULT_KINDS is served', async () => {
    const endless = new Set<FaultKind>(['slow-headers', 'slow-drip', 'endless']);
    for (const kind of Object.keys(FAULT_KINDS) as FaultKind[]) {
      const r = await raw(host.port, `/faults/${kind}/0`, endless.has(kind) ? 300 : 1500);
      assert.doesNotMatch(r.body.toString('latin1'), /unknown fault kind/, kind);
    }
    const unknown = await raw(host.port, '/faults/no-such-kind/0');
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.toString(), /unknown fault kind no-such-kind/);
    assert.ok(seen.some(([p]) => p === '/faults/ok/0'));
  });

  test('ok is a 64x64 JPEG with a right Content-Length, different per n', async () => {
    const a = await raw(host.port, '/faults/ok/1');
    const b = await raw(host.port, '/faults/ok/2');
    assert.equal(a.status, 200);
    assert.equal(a.headers.get('content-type')?.[0], 'image/jpeg');
    assert.equal(Number(a.headers.get('content-length')?.[0]), a.body.length);
    const meta = await sharp(a.body).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['jpeg', 64, 64]);
    assert.ok(a.body.equals(await faultImage(0, 1)));
    assert.ok(!a.body.equals(b.body));
  });

  test('status kinds: 404, 500, 429 then 200, always 429, 503 with a long Retry-After', async () => {
    assert.equal((await raw(host.port, '/faults/404/0')).status, 404);
    assert.equal((await raw(host.port, '/faults/500/0')).status, 500);
    const first = await raw(host.port, '/faults/429-then-ok/5');
    assert.equal(first.status, 429);
    assert.deepEqual(first.headers.get('retry-after'), ['1']);
    assert.equal((await raw(host.port, '/faults/429-then-ok/5')).status, 200);
    assert.equal((await raw(host.port, '/faults/429-always/5')).status, 429);
    assert.equal((await raw(host.port, '/faults/429-always/5')).status, 429);
    const long = await raw(host.port, '/faults/503-retry-after-long/0');
    assert.equal(long.status, 503);
    assert.deepEqual(long.headers.get('retry-after'), ['3600']);
  });

  test('reset sends part of a status line then a TCP reset; close-early sends nothing', async () => {
    const reset = await raw(host.port, '/faults/reset/0');
    assert.equal(reset.head, 'HTTP/1.1 200 OK\r\nContent-Type: ima');
    assert.equal(reset.error, 'ECONNRESET');
    const early = await raw(host.port, '/faults/close-early/0');
    assert.equal(early.head, '');
    assert.equal(early.error, undefined);
  });

  test('slow-headers sends nothing; slow-drip sends a byte per 500 ms', async () => {
    const silent = await raw(host.port, '/faults/slow-headers/0', 600);
    assert.equal(silent.head, '');
    const drip = await raw(host.port, '/faults/slow-drip/0', 1200);
    assert.equal(drip.status, 200);
    // Chunked framing around 3 bytes (t = 0, 500, 1000 ms).
    const bytes = drip.body.toString('latin1').match(/\r\n\xff\r\n/g)?.length ?? 0;
    assert.ok(bytes >= 2 && bytes <= 4, `${bytes} bytes in 1.2 s`);
  });

  test('truncated declares the whole image and sends half; short-length sends more than declared', async () => {
    const image = await faultImage(0, 3);
    const t = await raw(host.port, '/faults/truncated/3');
    assert.equal(Number(t.headers.get('content-length')?.[0]), image.length);
    assert.ok(t.body.equals(image.subarray(0, Math.floor(image.length / 2))));
    const s = await raw(host.port, '/faults/short-length/3');
    assert.equal(Number(s.headers.get('content-length')?.[0]), image.length);
    assert.ok(s.body.length > image.length);
    assert.ok(s.body.subarray(0, image.length).equals(image));
  });

  test('huge bodies: declared and undeclared, both really sent', async () => {
    const d = await raw(host.port, '/faults/huge-declared/0');
    assert.equal(d.headers.get('content-length')?.[0], '200000');
    assert.equal(d.body.length, 200_000);
    const u = await raw(host.port, '/faults/huge-undeclared/0');
    assert.equal(u.headers.get('content-length'), undefined);
    assert.deepEqual(u.headers.get('transfer-encoding'), ['chunked']);
    assert.ok(u.body.length > 200_000);
  });

  test('endless keeps sending', async () => {
    const r = await raw(host.port, '/faults/endless/0', 300);
    assert.ok(r.body.length > 1_000_000, `${r.body.length} bytes in 300 ms`);
  });

  test('bomb is a small, valid PNG saying 30000x30000, which sharp refuses to decode', async () => {
    const png = await decompressionBomb();
    const served = await raw(host.port, '/faults/bomb/0');
    assert.ok(served.body.equals(png));
    assert.ok(png.length < 200_000, `${png.length} bytes`);
    const meta = await sharp(png, { limitInputPixels: false }).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 30000, 30000]);
    // Every chunk's CRC is right and the image data inflates to exactly 30000 rows of 1 + 3750 bytes.
    let off = 8;
    const idat: Buffer[] = [];
    const { crc32 } = await import('node:zlib');
    while (off < png.length) {
      const len = png.readUInt32BE(off);
      const typeAndData = png.subarray(off + 4, off + 8 + len);
      if (typeof crc32 === 'function') assert.equal(png.readUInt32BE(off + 8 + len), crc32(typeAndData) >>> 0);
      if (typeAndData.subarray(0, 4).toString() === 'IDAT') idat.push(typeAndData.subarray(4));
      off += 12 + len;
    }
    assert.equal(off, png.length);
    let inflated = 0;
    await new Promise<void>((resolve, reject) => {
      const inf = createInflate();
      inf.on('data', (c: Buffer) => (inflated += c.length));
      inf.on('end', resolve);
      inf.on('error', reject);
      inf.end(Buffer.concat(idat));
    });
    assert.equal(inflated, 30000 * (1 + 3750));
    await assert.rejects(sharp(png).metadata(), /pixel limit/);
    await assert.rejects(sharp(png).toBuffer(), /pixel limit/);
  });

  test('framing kinds put on the wire what their descriptions say', async () => {
    const image = await faultImage(0, 5);
    const h10 = await raw(host.port, '/faults/http10-length/5');
    assert.match(h10.head, /^HTTP\/1\.0 200 OK\r\n/);
    assert.equal(Number(h10.headers.get('content-length')?.[0]), image.length);
    assert.ok(h10.body.equals(image));
    const h10c = await raw(host.port, '/faults/http10-close/5');
    assert.match(h10c.head, /^HTTP\/1\.0 200 OK\r\n/);
    assert.equal(h10c.headers.get('content-length'), undefined);
    assert.ok(h10c.body.equals(image));
    const slow = await raw(host.port, '/faults/close-slow-reader/5');
    assert.ok(slow.body.equals(await faultBody('close-slow-reader', 5)));
    assert.ok(slow.body.length > 300_000, `${slow.body.length} bytes`);
    assert.deepEqual(slow.headers.get('connection'), ['close']);
    const fin = await raw(host.port, '/faults/fin-after-headers/5');
    assert.equal(Number(fin.headers.get('content-length')?.[0]), image.length);
    assert.equal(fin.body.length, 0);
    const chunked = await raw(host.port, '/faults/chunked-trailers/5');
    assert.deepEqual(chunked.headers.get('transfer-encoding'), ['chunked']);
    assert.match(chunked.body.toString('latin1'), /\r\n0\r\nX-Checksum: 5f3c\r\nServer-Timing: [^\r]+\r\n\r\n$/);
    const gz = await raw(host.port, '/faults/gzip-image/5');
    assert.deepEqual(gz.headers.get('content-encoding'), ['gzip']);
    assert.ok(gunzipSync(gz.body).equals(image));
    const csv = await raw(host.port, '/faults/gzip-csv/5');
    assert.ok(gunzipSync(csv.body).equals(faultCsv(5)));
    assert.match(faultCsv(5).toString(), /^URL,TEXT,/);
    const hints = await raw(host.port, '/faults/early-hints/5');
    assert.equal(hints.status, 103);
    assert.match(hints.wire.toString('latin1'), /^HTTP\/1\.1 103 Early Hints\r\nLink: [^\r]+\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    assert.ok(hints.wire.subarray(hints.wire.length - image.length).equals(image));
    const two = await raw(host.port, '/faults/two-lengths/5');
    assert.deepEqual(two.headers.get('content-length'), [String(image.length), String(image.length + 10)]);
    const latin = await raw(host.port, '/faults/non-utf8-header/5');
    assert.ok(latin.wire.includes(Buffer.from([0x63, 0x61, 0x66, 0xe9])), 'caf\\xe9 is on the wire as one Latin-1 byte');
    assert.ok(latin.body.equals(image));
    const bytes = await raw(host.port, '/faults/one-byte-writes/5');
    assert.ok(bytes.body.equals(image));
    // Loopback may coalesce a few segments, but never the whole response into a handful of reads.
    assert.ok(bytes.reads > image.length / 4, `${bytes.reads} reads for ${bytes.wire.length} bytes`);
  });

  test('html, redirects and X-Robots-Tag headers', async () => {
    const html = await raw(host.port, '/faults/html/0');
    assert.match(html.headers.get('content-type')?.[0] ?? '', /^text\/html/);
    assert.match(html.body.toString(), /<html>/);
    assert.deepEqual((await raw(host.port, '/faults/redirect-loop/4')).headers.get('location'), ['/faults/redirect-loop/4']);
    assert.deepEqual((await raw(host.port, '/faults/redirect-ok/4')).headers.get('location'), ['/faults/redirect-ok/4?hop=1']);
    assert.deepEqual((await raw(host.port, '/faults/redirect-ok/4?hop=3')).status, 200);
    assert.deepEqual((await raw(host.port, '/faults/redirect-metadata/0')).headers.get('location'), ['http://169.254.169.254/latest/meta-data/']);
    assert.deepEqual((await raw(host.port, '/faults/redirect-private/0')).headers.get('location'), ['http://10.0.0.1/x']);
    assert.deepEqual((await raw(host.port, '/faults/robots-noai/0')).headers.get('x-robots-tag'), ['noai']);
    assert.deepEqual((await raw(host.port, '/faults/robots-ours/0')).headers.get('x-robots-tag'), ['img2dataset: noimageai']);
    assert.deepEqual((await raw(host.port, '/faults/robots-otherbot/0')).headers.get('x-robots-tag'), ['otherbot: noai']);
  });
});
