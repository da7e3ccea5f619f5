// A server that sends its whole response and closes (HTTP/1.0 style, Connection: close) while the
// reader is not reading: undici 7's parser is paused then, and the FIN threw from a socket handler
// (nodejs/undici#5360), killing download_csv on Python's http.server. Both downloaders and the bare
// client must come out of it with every byte.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { downloadFile } from '../download_csv/file-downloader.ts';
import { DEFAULT_DISALLOWED_HEADER_DIRECTIVES, ImageDownloader } from '../download_images/downloader.ts';
import { HttpClient, type HttpResponse, type RequestOptions } from '../lib/http/client.ts';

const BODY = randomBytes(64 * 1024);
let server: Server;
let origin: string;

before(async () => {
  server = createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', () => {
      sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${BODY.length}\r\nConnection: close\r\n\r\n`);
      sock.end(BODY);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The real client, but its caller stops reading for a while after the headers and between chunks. */
class PausedReaderClient extends HttpClient {
  override async open(url: string, opts: RequestOptions): Promise<HttpResponse> {
    const res = await super.open(url, opts);
    const inner = res.body;
    async function* slow(): AsyncGenerator<Buffer> {
      await sleep(300); // the whole body and the FIN arrive meanwhile
      for await (const chunk of inner) {
        yield chunk;
        await sleep(5);
      }
    }
    return { ...res, body: slow() };
  }
}

test('the bare client reads all 64 kB after the server closed while nothing was read', async () => {
  const client = new HttpClient({ allowPrivateAddresses: true });
  try {
    const res = await client.open(`${origin}/raw`, { timeoutMs: 5000 });
    await sleep(300);
    const parts: Buffer[] = [];
    for await (const c of res.body) {
      parts.push(c);
      await sleep(5);
    }
    assert.ok(Buffer.concat(parts).equals(BODY));
  } finally {
    await client.close();
  }
});

test('download_csv: four files from a closing server, each byte-identical', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'server-close-'));
  const client = new PausedReaderClient({ allowPrivateAddresses: true });
  try {
    const results = await Promise.all(
      [0, 1, 2, 3].map((i) => downloadFile(client, `${origin}/f${i}.csv`, join(dir, `f${i}.csv`), { timeoutMs: 5000, retries: 0, maxBytes: 1 << 20 })),
    );
    for (const [i, r] of results.entries()) {
      assert.deepEqual(r, { status: 'downloaded', size: BODY.length });
      assert.ok((await readFile(join(dir, `f${i}.csv`))).equals(BODY), `f${i}.csv differs`);
    }
  } finally {
    await client.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('download_images: four images from a closing server, each with every byte', async () => {
  const client = new PausedReaderClient({ allowPrivateAddresses: true });
  try {
    const downloader = new ImageDownloader(client, {
      timeoutMs: 5000,
      retries: 0,
      maxImageBytes: 1 << 20,
      userAgentToken: null,
      disallowedHeaderDirectives: [...DEFAULT_DISALLOWED_HEADER_DIRECTIVES],
    });
    const outs = await Promise.all([0, 1, 2, 3].map((i) => downloader.download(`${origin}/i${i}.jpg`)));
    for (const out of outs) {
      assert.ok(out.ok, JSON.stringify(out));
      assert.ok(out.bytes.equals(BODY));
    }
  } finally {
    await client.close();
  }
});
