// lib/http/address-policy.ts: loopback can be opened for tests while every other refused range
// (10/8, 172.16/12, 192.168/16, 169.254/16, fe80::/10, ...) stays refused, in every spelling.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { createAddressPolicy, LOOPBACK_RANGES } from '../lib/http/address-policy.ts';
import { HttpClient, HttpError, type HttpClientOptions } from '../lib/http/client.ts';
import { DnsCache } from '../lib/http/dns-cache.ts';

const STILL_REFUSED: Array<[string, RegExp]> = [
  ['10.0.0.1', /^private 10\.0\.0\.0\/8$/],
  ['172.16.0.1', /^private 172\.16/],
  ['192.168.1.1', /^private 192\.168/],
  ['169.254.169.254', /^link-local 169\.254/],
  ['0.0.0.0', /^unspecified/],
  ['100.64.0.1', /^carrier-grade NAT/],
  ['fe80::1', /^link-local fe80/],
  ['[fe80::1%eth0]', /^link-local/],
  ['fd00::1', /^private fc00/],
  ['::ffff:169.254.169.254', /^link-local/],
  ['::ffff:a00:1', /^private 10\./],
  ['::', /^unspecified/],
];

describe('address policy', () => {
  test('without options it is the guard itself', () => {
    const p = createAddressPolicy();
    assert.equal(p.allowsAll, false);
    assert.match(p.blockedReason('127.0.0.1') ?? '', /^loopback/);
    assert.match(p.blockedReason('::1') ?? '', /^loopback/);
    assert.equal(p.blockedReason('8.8.8.8'), null);
  });

  test('allowPrivateAddresses lifts everything', () => {
    const p = createAddressPolicy({ allowPrivateAddresses: true, allowRanges: LOOPBACK_RANGES });
    assert.equal(p.allowsAll, true);
    for (const [a] of STILL_REFUSED) assert.equal(p.blockedReason(a), null, a);
  });

  test('loopback ranges open loopback in every spelling and nothing else', () => {
    const p = createAddressPolicy({ allowRanges: LOOPBACK_RANGES });
    assert.equal(p.allowsAll, false);
    for (const a of ['127.0.0.1', '127.8.9.10', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::ffff:7f00:1', '[::ffff:127.0.0.2]']) {
      assert.equal(p.blockedReason(a), null, a);
    }
    for (const [a, why] of STILL_REFUSED) assert.match(p.blockedReason(a) ?? 'null', why, a);
    assert.equal(p.blockedReason('93.184.216.34'), null);
    assert.equal(p.blockedReason('2606:4700:4700::1111'), null);
  });

  test('any CIDR can be opened, exactly', () => {
    const p = createAddressPolicy({ allowRanges: ['192.168.1.0/24', 'fd12:3456::/32', '10.9.8.7'] });
    assert.equal(p.blockedReason('192.168.1.200'), null);
    assert.match(p.blockedReason('192.168.2.1') ?? '', /^private/);
    assert.equal(p.blockedReason('fd12:3456::9'), null);
    assert.match(p.blockedReason('fd12:3457::9') ?? '', /^private/);
    assert.equal(p.blockedReason('10.9.8.7'), null);
    assert.match(p.blockedReason('10.9.8.8') ?? '', /^private/);
    assert.match(p.blockedReason('127.0.0.1') ?? '', /^loopback/);
  });

  test('bad ranges are rejected when the policy is made', () => {
    assert.throws(() => createAddressPolicy({ allowRanges: ['not-a-range'] }), /not a CIDR range/);
    assert.throws(() => createAddressPolicy({ allowRanges: ['10.0.0.0/33'] }), /not a CIDR range/);
    assert.throws(() => createAddressPolicy({ allowRanges: ['::/129'] }), /not a CIDR range/);
  });
});

// These need HttpClient to take `addressPolicy` (the proposed lib/http/client.ts change); they are
// reported as todo until it does.
describe('HttpClient with a loopback-only policy', async () => {
  const server = createServer((req, res) => {
    if (req.url === '/to-metadata') {
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' });
      res.end();
    } else if (req.url === '/to-private') {
      res.writeHead(301, { location: 'http://10.0.0.1/x' });
      res.end();
    } else res.end('hello');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const dnsCache = new DnsCache({
    resolve: async (h) => [{ address: h.startsWith('lan.') ? '10.0.0.1' : '127.0.0.1', family: 4 }],
  });
  const client = new HttpClient({ addressPolicy: createAddressPolicy({ allowRanges: LOOPBACK_RANGES }), dnsCache } as HttpClientOptions);
  const wired = await client.get(`http://127.0.0.1:${port}/`, { timeoutMs: 2000 }).then(
    () => true,
    () => false,
  );
  const todo = wired ? false : 'needs addressPolicy in HttpClientOptions (see report)';

  const refused = async (url: string, address: RegExp): Promise<void> => {
    const t0 = Date.now();
    await assert.rejects(client.open(url, { timeoutMs: 3000 }), (e) => {
      assert.ok(e instanceof HttpError && e.code === 'ADDRESS_BLOCKED', String(e));
      assert.match(e.message, address);
      return true;
    });
    assert.ok(Date.now() - t0 < 1000, 'refused only after trying to connect');
  };

  test('loopback is fetched, by address and by a name resolving to it', { todo }, async () => {
    assert.equal((await client.get(`http://127.0.0.1:${port}/`, { timeoutMs: 2000 })).body.toString(), 'hello');
    assert.equal((await client.get(`http://images.test:${port}/`, { timeoutMs: 2000 })).body.toString(), 'hello');
  });

  test('a redirect to the metadata endpoint is refused at that hop', { todo }, async () => {
    await refused(`http://127.0.0.1:${port}/to-metadata`, /169\.254\.169\.254.*link-local/);
  });

  test('a redirect to 10.0.0.1 is refused at that hop', { todo }, async () => {
    await refused(`http://127.0.0.1:${port}/to-private`, /10\.0\.0\.1.*private/);
  });

  test('a name resolving to a private address is refused', { todo }, async () => {
    await refused(`http://lan.test:${port}/`, /lan\.test \(10\.0\.0\.1\): private/);
  });

  after(async () => {
    await client.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
});
