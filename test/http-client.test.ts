// The shared HttpClient against misbehaving loopback servers: absolute deadlines, body caps,
// redirects, retries with Retry-After, the address guard and the DNS cache.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { startCrawlHost, type CrawlHost } from '../demo/crawl-host.ts';
import { faultsRoute, faultUrl } from '../demo/faults.ts';
import { blockedReason } from '../lib/http/address-guard.ts';
import { HttpClient, HttpError, withRetries } from '../lib/http/client.ts';
import { DnsCache } from '../lib/http/dns-cache.ts';

const DEADLINE = 1000;
const MARGIN = 800;

async function timed<T>(fn: () => Promise<T>): Promise<{ value?: T; error?: unknown; ms: number }> {
  const t0 = Date.now();
  try {
    const value = await fn();
    return { value, ms: Date.now() - t0 };
  } catch (error) {
    return { error, ms: Date.now() - t0 };
  }
}

function assertHttpError(err: unknown, code: HttpError['code']): HttpError {
  assert.ok(err instanceof HttpError, `expected HttpError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('HttpClient deadlines and caps', () => {
  let host: CrawlHost;
  let client: HttpClient;
  before(async () => {
    host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
    host.addRoute('/faults/', faultsRoute({ hugeBytes: 3_000_000 }));
    client = new HttpClient({ allowPrivateAddresses: true });
  });
  after(async () => {
    await client.close();
    await host.close();
  });

  test('a server that never sends headers ends at the deadline', async () => {
    const r = await timed(() => client.open(faultUrl(host.origin, 'slow-headers'), { timeoutMs: DEADLINE }));
    const err = assertHttpError(r.error, 'TIMEOUT');
    assert.match(err.message, /timed out after 1s/);
    assert.ok(r.ms >= DEADLINE - 50 && r.ms < DEADLINE + MARGIN, `${r.ms} ms`);
  });

  test('a body dripping a byte every 500 ms ends at the deadline, not when it stops', async () => {
    const r = await timed(async () => {
      const res = await client.open(faultUrl(host.origin, 'slow-drip'), { timeoutMs: DEADLINE });
      assert.equal(res.status, 200);
      return res.buffer();
    });
    assertHttpError(r.error, 'TIMEOUT');
    assert.ok(r.ms >= DEADLINE - 50 && r.ms < DEADLINE + MARGIN, `${r.ms} ms`);
  });

  test('an endless fast body without a cap ends at the deadline', async () => {
    let bytes = 0;
    const r = await timed(async () => {
      const res = await client.open(faultUrl(host.origin, 'endless'), { timeoutMs: DEADLINE });
      for await (const c of res.body) bytes += c.length;
    });
    assertHttpError(r.error, 'TIMEOUT');
    assert.ok(bytes > 1_000_000, `only ${bytes} bytes arrived before the deadline`);
    assert.ok(r.ms < DEADLINE + MARGIN, `${r.ms} ms`);
  });

  test('a declared body over the cap is refused before reading it', async () => {
    const r = await timed(() => client.open(faultUrl(host.origin, 'huge-declared'), { timeoutMs: 5000, maxBytes: 1_000_000 }));
    const err = assertHttpError(r.error, 'BODY_TOO_LARGE');
    assert.match(err.message, /3000000 bytes/);
    assert.ok(r.ms < 2000, `${r.ms} ms`);
  });

  test('an undeclared body over the cap stops at the cap', async () => {
    let bytes = 0;
    const r = await timed(async () => {
      const res = await client.open(faultUrl(host.origin, 'huge-undeclared'), { timeoutMs: 5000, maxBytes: 1_000_000 });
      for await (const c of res.body) bytes += c.length;
    });
    assertHttpError(r.error, 'BODY_TOO_LARGE');
    assert.ok(bytes <= 1_000_000, `${bytes} bytes handed out past the cap`);
  });

  test('a body exactly at the cap is accepted', async () => {
    const res = await client.get(faultUrl(host.origin, 'ok'), { timeoutMs: 5000, maxBytes: 100_000 });
    const exact = res.body.length;
    const again = await client.get(faultUrl(host.origin, 'ok'), { timeoutMs: 5000, maxBytes: exact });
    assert.equal(again.body.length, exact);
  });

  // BUG in lib/http/client.ts: the declared-length refusal destroys the undici body before any
  // 'error' listener is attached; undici then emits RequestAbortedError and the process dies.
  // Run in a child process so the crash is observed instead of taking this runner down.
  test('refusing a declared body over the cap does not crash the process', () => {
    const script = `
      import { HttpClient } from ${JSON.stringify(new URL('../lib/http/client.ts', import.meta.url).href)};
      import { createServer } from 'node:http';
      const s = createServer((q, r) => { r.writeHead(200, { 'content-length': 10 }); r.end('0123456789'); });
      await new Promise((r) => s.listen(0, '127.0.0.1', r));
      const c = new HttpClient({ allowPrivateAddresses: true });
      let code = 'none';
      try { await c.open('http://127.0.0.1:' + s.address().port + '/', { timeoutMs: 2000, maxBytes: 5 }); } catch (e) { code = e.code; }
      await new Promise((r) => setTimeout(r, 200));
      await c.close();
      s.closeAllConnections();
      s.close();
      console.log('result', code);
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.match(r.stdout, /result BODY_TOO_LARGE/, r.stderr);
    assert.equal(r.status, 0, r.stderr);
  });

  test('redirects: three hops are followed, a loop stops after the limit', async () => {
    const ok = await client.get(faultUrl(host.origin, 'redirect-ok', 4), { timeoutMs: 5000 });
    assert.equal(ok.redirects, 3);
    assert.match(ok.url, /hop=3$/);
    host.stats.reset();
    const r = await timed(() => client.open(faultUrl(host.origin, 'redirect-loop', 1), { timeoutMs: 5000 }));
    assertHttpError(r.error, 'TOO_MANY_REDIRECTS');
    // The first request plus five followed redirects.
    assert.equal(host.stats.requestsByPath.get('/faults/redirect-loop/1'), 6);
    await assert.rejects(client.open(faultUrl(host.origin, 'redirect-ok', 5), { timeoutMs: 5000, maxRedirects: 2 }), (e) => {
      assertHttpError(e, 'TOO_MANY_REDIRECTS');
      return true;
    });
  });

  test('every redirect hop is checked again: a hop to another scheme is refused', async () => {
    const srv = await listen((_req, res) => {
      res.writeHead(302, { location: 'file:///etc/passwd' });
      res.end();
    });
    try {
      await assert.rejects(client.open(`http://127.0.0.1:${srv.port}/x`, { timeoutMs: 2000 }), (e) => {
        assert.match(assertHttpError(e, 'BAD_URL').message, /unsupported scheme file:/);
        return true;
      });
    } finally {
      await srv.close();
    }
  });
});

describe('HttpClient Content-Encoding', () => {
  const PLAIN = Buffer.from('URL,TEXT\n' + 'https://example.com/a.jpg,"a cat on a mat"\n'.repeat(5000));
  const bodies: Record<string, Buffer> = {
    gzip: gzipSync(PLAIN),
    br: brotliCompressSync(PLAIN),
    deflate: deflateSync(PLAIN), // zlib-wrapped, as the RFC says
    'deflate-raw': deflateRawSync(PLAIN), // sent as "deflate" by servers that got it wrong
    bomb: gzipSync(Buffer.alloc(50_000_000)),
    bad: Buffer.concat([gzipSync(PLAIN).subarray(0, 100), Buffer.alloc(100, 0x41)]),
    unknown: Buffer.from('opaque'),
  };
  const encodingOf: Record<string, string> = { 'deflate-raw': 'deflate', bomb: 'gzip', bad: 'gzip', unknown: 'x-custom' };
  let srv: Awaited<ReturnType<typeof listen>>;
  let client: HttpClient;
  before(async () => {
    srv = await listen((req, res) => {
      const name = req.url!.slice(1);
      res.writeHead(200, { 'content-encoding': encodingOf[name] ?? name, 'content-length': bodies[name]!.length });
      res.end(bodies[name]);
    });
    client = new HttpClient({ allowPrivateAddresses: true });
  });
  after(async () => {
    await client.close();
    await srv.close();
  });
  const url = (name: string): string => `http://127.0.0.1:${srv.port}/${name}`;

  test('gzip, br, deflate and raw deflate are decoded when asked, left alone otherwise', async () => {
    for (const name of ['gzip', 'br', 'deflate', 'deflate-raw']) {
      const res = await client.open(url(name), { timeoutMs: 5000, decodeContentEncoding: true, maxBytes: PLAIN.length });
      assert.equal(res.decodedEncoding, encodingOf[name] ?? name);
      assert.ok((await res.buffer()).equals(PLAIN), name);
    }
    const raw = await client.open(url('gzip'), { timeoutMs: 5000 });
    assert.equal(raw.decodedEncoding, undefined);
    assert.ok((await raw.buffer()).equals(bodies.gzip!));
    const unknown = await client.open(url('unknown'), { timeoutMs: 5000, decodeContentEncoding: true });
    assert.equal(unknown.decodedEncoding, undefined);
    assert.ok((await unknown.buffer()).equals(bodies.unknown!));
  });

  test('the cap applies to the decoded bytes: a 50 KB gzip of 50 MB stops at the cap', async () => {
    assert.ok(bodies.bomb!.length < 100_000);
    const res = await client.open(url('bomb'), { timeoutMs: 5000, decodeContentEncoding: true, maxBytes: 1_000_000 });
    const { error } = await timed(() => res.buffer());
    assert.match(assertHttpError(error, 'BODY_TOO_LARGE').message, /1000000-byte cap once decoded \(gzip\)/);
  });

  test('a corrupt gzip body is a network error saying so, not a crash', async () => {
    const res = await client.open(url('bad'), { timeoutMs: 5000, decodeContentEncoding: true });
    const { error } = await timed(() => res.buffer());
    assert.match(assertHttpError(error, 'NETWORK').message, /bad gzip body/);
  });
});

describe('HttpClient retries', () => {
  let host: CrawlHost;
  let client: HttpClient;
  before(async () => {
    host = await startCrawlHost({ files: 1, rowsPerFile: 1 });
    host.addRoute('/faults/', faultsRoute({ retryAfterSeconds: 1 }));
    client = new HttpClient({ allowPrivateAddresses: true });
  });
  after(async () => {
    await client.close();
    await host.close();
  });

  test('429 with Retry-After: 1 is waited out, then the body arrives', async () => {
    const retries: number[] = [];
    const r = await timed(() =>
      client.get(faultUrl(host.origin, '429-then-ok', 1), { timeoutMs: 2000, retries: 2, onRetry: (_e, _a, d) => retries.push(d) }),
    );
    assert.ok(r.value, String(r.error));
    assert.equal(r.value.status, 200);
    assert.deepEqual(retries, [1000]);
    assert.ok(r.ms >= 950 && r.ms < 1000 + MARGIN, `${r.ms} ms`);
  });

  test('no retry is started that would wait past giveUpAt', async () => {
    const r = await timed(() =>
      client.get(faultUrl(host.origin, '429-then-ok', 2), { timeoutMs: 2000, retries: 2, giveUpAt: Date.now() + 500 }),
    );
    const err = assertHttpError(r.error, 'HTTP_STATUS');
    assert.equal(err.status, 429);
    assert.equal(err.retryAfterMs, 1000);
    assert.ok(r.ms < 400, `${r.ms} ms`);
  });

  test('500 is retried with backoff, 404 is not', async () => {
    let calls500 = 0;
    let calls404 = 0;
    const srv = await listen((req, res) => {
      if (req.url === '/500') {
        calls500++;
        res.writeHead(calls500 < 3 ? 500 : 200);
        res.end('x');
      } else {
        calls404++;
        res.writeHead(404);
        res.end();
      }
    });
    try {
      const ok = await client.get(`http://127.0.0.1:${srv.port}/500`, { timeoutMs: 2000, retries: 3, backoffMs: 10 });
      assert.equal(ok.body.toString(), 'x');
      assert.equal(calls500, 3);
      await assert.rejects(client.get(`http://127.0.0.1:${srv.port}/404`, { timeoutMs: 2000, retries: 3, backoffMs: 10 }), (e) => {
        assert.equal(assertHttpError(e, 'HTTP_STATUS').status, 404);
        return true;
      });
      assert.equal(calls404, 1);
    } finally {
      await srv.close();
    }
  });

  test('withRetries gives up after the last retry with the last error', async () => {
    let n = 0;
    await assert.rejects(
      withRetries('http://x/', { retries: 2, backoffMs: 1 }, async () => {
        n++;
        throw new HttpError('NETWORK', `fail ${n}`, 'http://x/');
      }),
      /fail 3/,
    );
    assert.equal(n, 3);
  });
});

describe('address guard', () => {
  test('blockedReason refuses private, loopback, link-local, mapped and unspecified addresses', () => {
    const refused: Array<[string, RegExp]> = [
      ['10.1.2.3', /^private 10\.0\.0\.0\/8$/],
      ['172.16.0.1', /^private 172\.16\.0\.0\/12$/],
      ['172.31.255.255', /^private/],
      ['192.168.1.1', /^private 192\.168/],
      ['169.254.169.254', /^link-local 169\.254/],
      ['127.0.0.1', /^loopback/],
      ['0.0.0.0', /^unspecified/],
      ['::1', /^loopback ::1/],
      ['[::1]', /^loopback/],
      ['fe80::1', /^link-local fe80/],
      ['fe80::1%eth0', /^link-local/],
      ['fd00::1', /^private fc00/],
      ['::ffff:127.0.0.1', /^loopback 127/],
      ['::ffff:7f00:1', /^loopback 127/],
      ['::ffff:169.254.169.254', /^link-local/],
      ['224.0.0.1', /^multicast/],
    ];
    for (const [addr, why] of refused) assert.match(blockedReason(addr) ?? 'null', why, addr);
    for (const ok of ['8.8.8.8', '172.32.0.1', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) {
      assert.equal(blockedReason(ok), null, ok);
    }
  });

  test('the client refuses IP-literal URLs in refused ranges without connecting', async () => {
    let requests = 0;
    const srv = await listen((_req, res) => {
      requests++;
      res.end('secret');
    });
    const client = new HttpClient();
    try {
      const urls = [
        'http://10.0.0.1/x',
        'http://172.16.5.4/',
        'http://192.168.0.10/',
        'http://169.254.169.254/latest/meta-data/',
        `http://127.0.0.1:${srv.port}/`,
        `http://[::1]:${srv.port}/`,
        'http://[fe80::1]/',
        `http://[::ffff:127.0.0.1]:${srv.port}/`,
      ];
      for (const url of urls) {
        const r = await timed(() => client.open(url, { timeoutMs: 3000 }));
        const err = assertHttpError(r.error, 'ADDRESS_BLOCKED');
        assert.match(err.message, /refused to connect .*--allow-private-addresses/, url);
        assert.ok(r.ms < 500, `${url}: ${r.ms} ms`);
      }
      assert.equal(requests, 0);
    } finally {
      await client.close();
      await srv.close();
    }
  });

  test('a hostname that resolves to 127.0.0.1 is refused while private addresses are not allowed', async () => {
    let requests = 0;
    const srv = await listen((_req, res) => {
      requests++;
      res.end('secret');
    });
    const resolved: string[] = [];
    const dnsCache = new DnsCache({
      resolve: async (h) => {
        resolved.push(h);
        return [{ address: '127.0.0.1', family: 4 }];
      },
    });
    const client = new HttpClient({ dnsCache });
    try {
      const r = await timed(() => client.open(`http://images.example.com:${srv.port}/a.jpg`, { timeoutMs: 3000 }));
      const err = assertHttpError(r.error, 'ADDRESS_BLOCKED');
      assert.match(err.message, /images\.example\.com \(127\.0\.0\.1\): loopback/);
      assert.deepEqual(resolved, ['images.example.com']);
      assert.equal(requests, 0);
    } finally {
      await client.close();
      await srv.close();
    }
  });

  test('with private addresses allowed the same hostname is fetched', async () => {
    const srv = await listen((_req, res) => res.end('hello'));
    const dnsCache = new DnsCache({ resolve: async () => [{ address: '127.0.0.1', family: 4 }] });
    const client = new HttpClient({ dnsCache, allowPrivateAddresses: true });
    try {
      const res = await client.get(`http://images.example.com:${srv.port}/a.jpg`, { timeoutMs: 3000 });
      assert.equal(res.body.toString(), 'hello');
    } finally {
      await client.close();
      await srv.close();
    }
  });
});

describe('DNS cache', () => {
  test('answers are cached, concurrent lookups share one query, failures are cached briefly', async () => {
    const calls: string[] = [];
    const cache = new DnsCache({
      negativeTtlMs: 100,
      resolve: async (h) => {
        calls.push(h);
        await new Promise((r) => setTimeout(r, 10));
        if (h === 'nx.example') throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${h}`), { code: 'ENOTFOUND' });
        return [{ address: '192.0.2.7', family: 4 }];
      },
    });
    const [a, b] = await Promise.all([cache.resolve('a.example'), cache.resolve('a.example')]);
    assert.deepEqual(a, b);
    assert.equal(a[0]!.address, '192.0.2.7');
    await cache.resolve('a.example');
    assert.deepEqual(calls, ['a.example']);
    assert.equal(cache.misses, 1);
    assert.equal(cache.hits, 2);

    await assert.rejects(cache.resolve('nx.example'), { code: 'ENOTFOUND' });
    await assert.rejects(cache.resolve('nx.example'), { code: 'ENOTFOUND' });
    assert.equal(calls.filter((h) => h === 'nx.example').length, 1, 'negative answer not cached');
    await new Promise((r) => setTimeout(r, 150));
    await assert.rejects(cache.resolve('nx.example'), { code: 'ENOTFOUND' });
    assert.equal(calls.filter((h) => h === 'nx.example').length, 2, 'negative answer kept past its TTL');
  });

  test('the client asks the resolver once for two connections to the same hostname', async () => {
    const s1 = await listen((_req, res) => res.end('one'));
    const s2 = await listen((_req, res) => res.end('two'));
    let queries = 0;
    const dnsCache = new DnsCache({
      resolve: async () => {
        queries++;
        return [{ address: '127.0.0.1', family: 4 }];
      },
    });
    const client = new HttpClient({ dnsCache, allowPrivateAddresses: true });
    try {
      const r1 = await client.get(`http://cdn.example:${s1.port}/`, { timeoutMs: 3000 });
      const r2 = await client.get(`http://cdn.example:${s2.port}/`, { timeoutMs: 3000 });
      assert.equal(r1.body.toString() + r2.body.toString(), 'onetwo');
      assert.equal(queries, 1);
      assert.ok(dnsCache.hits >= 1);
    } finally {
      await client.close();
      await s1.close();
      await s2.close();
    }
  });

  test('an unknown hostname fails as a network error naming ENOTFOUND', async () => {
    const dnsCache = new DnsCache({
      resolve: async (h) => {
        throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${h}`), { code: 'ENOTFOUND' });
      },
    });
    const client = new HttpClient({ dnsCache, allowPrivateAddresses: true });
    try {
      await assert.rejects(client.open('http://nowhere.example/', { timeoutMs: 2000 }), (e) => {
        assert.match(assertHttpError(e, 'NETWORK').message, /ENOTFOUND/);
        return true;
      });
    } finally {
      await client.close();
    }
  });
});
