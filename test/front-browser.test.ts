// The search page in a real browser: playwright-core drives Debian's chromium (headless, no sandbox,
// background networking off; no browser download). Type a query, press Enter, result images load;
// the state is in the URL; clicking a result (by keyboard) searches for images like it; a reload of
// the shared URL gives the same search. Screenshots are saved under test-artifacts/ (or
// $TEST_ARTIFACTS) for CI and the README.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { faissAvailable } from '../lib/faiss/index.ts';
import { buildBackFixture, startBack, type BackFixture, type RunningBack } from './helpers/back-fixture.ts';
import { REPO_ROOT } from './helpers/cli-process.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = process.env.TEST_ARTIFACTS ?? join(REPO_ROOT, 'test-artifacts');
const skip = !existsSync(CHROMIUM)
  ? `no chromium at ${CHROMIUM} (apt-get install chromium, as .ci/install does)`
  : faissAvailable().ok
    ? false
    : 'faiss addon not built (bash .ci/install)';

let fx: BackFixture;
let back: RunningBack;

before(async () => {
  if (skip) return;
  fx = await buildBackFixture();
  // The page searches by a result's image URL, which here is on a loopback host.
  back = await startBack(fx, { demo: { indice_folder: fx.indexFolder, clip_model: fx.model } }, ['--allow-private-addresses']);
});
after(async () => {
  await back?.stop();
  await fx?.close();
});

test('search page: type, Enter, images load, click a result to search by image, state in the URL', { skip, timeout: 120_000 }, async () => {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(back.url + '/');
    await page.waitForSelector('body[data-ready="1"]');
    assert.deepEqual(await page.$$eval('#index option', (os) => os.map((o) => (o as HTMLOptionElement).value)), ['demo']);

    // Keyboard only: the query box has focus on load.
    await page.keyboard.type('a green square');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelectorAll('#results img').length > 0 && [...document.querySelectorAll<HTMLImageElement>('#results img')].every((i) => i.complete));
    const loaded = await page.$$eval('#results img', (imgs) => imgs.map((i) => ({ w: (i as HTMLImageElement).naturalWidth, alt: (i as HTMLImageElement).alt })));
    assert.ok(loaded.length > 0);
    assert.ok(loaded.every((i) => i.w > 0), JSON.stringify(loaded));
    // The two green squares of the fixture (two sizes), then the other green shapes.
    assert.deepEqual(loaded.slice(0, 2).map((i) => i.alt), ['a green square', 'a green square']);
    assert.ok(loaded.slice(2, 8).every((i) => /^a green (circle|triangle|star)$/.test(i.alt)), JSON.stringify(loaded.slice(0, 8)));
    const captions = await page.$$eval('#results .caption', (cs) => cs.map((c) => c.textContent));
    assert.match(captions[0]!, /green square/);
    assert.match((await page.textContent('#results .similarity'))!, /^\d\.\d{4}$/);
    assert.match((await page.getAttribute('#results a.source', 'href'))!, /^http:\/\/127\.0\.0\.1:\d+\/img\/\d+\.jpg$/);
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('q'), 'a green square');
    assert.equal(url.searchParams.get('index'), 'demo');
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'front-text-search.png') });

    // Click a result: image search by its URL (tab to it and press Enter: keyboard usable).
    const target = await page.$$eval('#results a.source', (as) => (as[2] as HTMLAnchorElement).href);
    const targetCaption = captions[2]!;
    await page.focus('#results li:nth-child(3) button.result');
    await page.keyboard.press('Enter');
    await page.waitForFunction((u) => new URL(location.href).searchParams.get('imageUrl') === u, target);
    await page.waitForFunction(() => !document.querySelector('#results')!.hasAttribute('aria-busy') && document.querySelectorAll('#results img').length > 0);
    // Results load lazily: the ones far below the fold wait until scrolled to.
    await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>('#results img')].filter((i) => i.getBoundingClientRect().top < 2 * innerHeight).every((i) => i.complete));
    const first = await page.$eval('#results img', (i) => ({ w: (i as HTMLImageElement).naturalWidth, src: (i as HTMLImageElement).src, alt: (i as HTMLImageElement).alt }));
    assert.ok(first.w > 0);
    // The picture itself (or its near-identical copy at the other size) comes first.
    assert.equal(first.alt, targetCaption, `${first.alt} vs ${targetCaption}`);
    assert.equal(await page.isVisible('#query-image'), true);
    assert.equal(await page.inputValue('#modality'), 'image');
    await page.screenshot({ path: join(ARTIFACTS, 'front-image-search.png') });

    // Back goes to the text search; a fresh page on the shared URL runs it again.
    await page.goBack();
    await page.waitForFunction(() => new URL(location.href).searchParams.get('q') === 'a green square');
    const shared = await browser.newPage();
    await shared.goto(back.url + '/?q=a+blue+circle&modality=image&n=10&safe=1&dedup=0');
    await shared.waitForFunction(() => document.querySelectorAll('#results img').length > 0);
    assert.equal(await shared.inputValue('#query'), 'a blue circle');
    assert.equal(await shared.$eval('#results img', (i) => (i as HTMLImageElement).alt), 'a blue circle');
    assert.ok((await shared.$$('#results li')).length <= 10);

    // Upload: the file chooser's image is sent as base64 and searched by.
    const yellow = fx.items.find((i) => i.colour === 'yellow' && i.shape === 'circle')!;
    const file = join(fx.dir, 'upload.jpg');
    await writeFile(file, fx.jpegs.get(yellow.key)!);
    await shared.setInputFiles('#file', file);
    await shared.waitForFunction(() => document.querySelector<HTMLImageElement>('#results img')?.alt === 'a yellow circle');
    assert.equal(await shared.isVisible('#query-image'), true);
    assert.match((await shared.textContent('#query-image span'))!, /upload\.jpg/);

    // Paste: an image on the clipboard is searched by the same way.
    const magenta = fx.items.find((i) => i.colour === 'magenta' && i.shape === 'square')!;
    await shared.evaluate(async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'pasted.jpg', { type: 'image/jpeg' }));
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }, fx.jpegs.get(magenta.key)!.toString('base64'));
    await shared.waitForFunction(() => document.querySelector<HTMLImageElement>('#results img')?.alt === 'a magenta square');

    // A bad query shows the server's error, and the page keeps working.
    await shared.fill('#query', `${fx.imageHost}/img/missing.jpg`);
    await shared.press('#query', 'Enter');
    await shared.waitForSelector('#error:not([hidden])');
    assert.match((await shared.textContent('#error'))!, /could not be fetched.*404/);
    assert.deepEqual(pageErrors, []);
  } finally {
    await browser.close();
  }
});
