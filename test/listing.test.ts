import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderListing, type ListingEntry } from '../demo/listing-html.ts';
import { globToRegExp, looksLikeLoop, makeIncludeFilter, parseListing } from '../download_csv/listing.ts';

const root = new URL('http://host.example/cah/');
const page = new URL('http://host.example/cah/20210818/');
const entries: ListingEntry[] = [
  { href: 'job%20one/', label: 'job one/', isDir: true },
  { href: 'a.csv', label: 'a.csv', isDir: false, size: 5_242_880 },
  { href: 'b&amp;c.csv.gz', label: 'b&c.csv.gz', isDir: false, size: 17 },
  { href: '/cah/', label: 'up', isDir: true },
  { href: '/elsewhere/x.csv', label: 'x.csv', isDir: false, size: 1 },
  { href: 'http://other.example/cah/y.csv', label: 'y.csv', isDir: false, size: 1 },
];

for (const style of ['apache', 'nginx', 'lighttpd'] as const) {
  test(`${style} listing: folders and files below the root, no sort, parent or foreign links`, () => {
    // Entities in hrefs are written by the server; our renderer escapes labels and hrefs itself.
    const html = renderListing(style, page.pathname, entries.map((e) => ({ ...e, href: e.href.replace('&amp;', '&') })));
    const links = parseListing(html, page, root);
    const got = links.map((l) => `${l.isDir ? 'D' : 'F'} ${l.url.pathname}`).sort();
    assert.deepEqual(got, ['D /cah/20210818/job%20one/', 'F /cah/20210818/a.csv', 'F /cah/20210818/b&c.csv.gz']);
    const a = links.find((l) => l.url.pathname.endsWith('a.csv'))!;
    // Only nginx prints exact byte sizes; the others print 5.0M, which must not be taken as exact.
    assert.equal(a.size, style === 'nginx' ? 5_242_880 : undefined);
  });
}

test('relative hrefs resolve against the page URL after a redirect', () => {
  const html = '<a href="x.csv">x.csv</a> <a href="../">../</a> <a href="?C=M;O=A">Last modified</a>';
  const links = parseListing(html, new URL('http://host.example/cah/deep/'), root);
  assert.deepEqual(links.map((l) => l.url.href), ['http://host.example/cah/deep/x.csv']);
});

test('loop detection and include globs', () => {
  assert.equal(looksLikeLoop('loop/loop/loop/'), true);
  assert.equal(looksLikeLoop('a/b/a/b/a/b/'), true);
  assert.equal(looksLikeLoop('loop/loop/'), false);
  assert.equal(looksLikeLoop('2021/08/18/'), false);
  const inc = makeIncludeFilter(['*.csv', '2021*/**/*.tfrecord']);
  assert.equal(inc('x/y/a.csv'), true);
  assert.equal(inc('x/y/a.csv.gz'), false);
  assert.equal(inc('20210818/job/a.tfrecord'), true);
  assert.equal(inc('other/job/a.tfrecord'), false);
  assert.equal(globToRegExp('*.{csv,txt}').test('a.txt'), true);
  assert.equal(globToRegExp('part-?.csv').test('part-10.csv'), false);
});
