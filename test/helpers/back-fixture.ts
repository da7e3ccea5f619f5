// A small served dataset for the back end's tests: coloured-shape JPEGs (every tiny-CLIP colour x
// shape, two sizes each, plus an exact duplicate and NSFW-tagged rows) served by a local HTTP host,
// written as a webdataset tar, embedded by `run.ts inference` with the tiny model and indexed by
// `run.ts index` — the same CLIs a user runs — then `run.ts back` started on a free port.
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { shapeOutline, TINY_COLOURS, TINY_SHAPES, writeTinyClip, type TinyShape } from '../../demo/tiny-clip.ts';
import { TarWriter } from '../../lib/webdataset/tar-writer.ts';
import { runCli, startCli } from './cli-process.ts';

export interface FixtureItem {
  key: string;
  caption: string;
  colour: string;
  shape: TinyShape;
  url: string;
  nsfw: string;
}

export interface BackFixture {
  dir: string;
  model: string;
  indexFolder: string;
  items: FixtureItem[];
  /** The local host serving the images (http://127.0.0.1:P). */
  imageHost: string;
  /** The JPEG bytes by key. */
  jpegs: Map<string, Buffer>;
  close(): Promise<void>;
}

/** A JPEG of the unit shape of demo/tiny-clip.ts (circumradius 0.45 of the side) filled with the colour. */
export async function shapeJpeg(colour: string, shape: TinyShape, w: number, h: number): Promise<Buffer> {
  const [r, g, b] = TINY_COLOURS[colour]!.map((v) => Math.round(v * 255));
  const fill = `rgb(${r},${g},${b})`;
  const radius = Math.min(w, h) * 0.45;
  const outline = shapeOutline(shape);
  const body = outline
    ? `<polygon points="${outline.map(([x, y]) => `${w / 2 + x * radius},${h / 2 + y * radius}`).join(' ')}" fill="${fill}"/>`
    : `<circle cx="${w / 2}" cy="${h / 2}" r="${radius}" fill="${fill}"/>`;
  // White shapes on light grey: the tiny model reads the foreground as what is darker than white.
  const svg = `<svg width="${w}" height="${h}" xmlns="http://www.w3.org/2000/svg"><rect width="${w}" height="${h}" fill="${colour === 'white' ? 'rgb(200,200,200)' : 'white'}"/>${body}</svg>`;
  return sharp(Buffer.from(svg)).jpeg({ quality: 92 }).toBuffer();
}

function serveImages(jpegs: Map<string, Buffer>): Promise<Server> {
  const server = createServer((req, res) => {
    const m = /^\/img\/(\w+)\.jpg$/.exec(req.url ?? '');
    const body = m ? jpegs.get(m[1]!) : undefined;
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': body.length }).end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

export async function buildBackFixture(): Promise<BackFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'back-'));
  const model = writeTinyClip(join(dir, 'model'));
  const jpegs = new Map<string, Buffer>();
  const server = await serveImages(jpegs);
  const imageHost = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const items: FixtureItem[] = [];
  let n = 0;
  const add = async (colour: string, shape: TinyShape, size: number, nsfw: string, bytes?: Buffer): Promise<void> => {
    const key = String(n++).padStart(9, '0');
    jpegs.set(key, bytes ?? (await shapeJpeg(colour, shape, size, size)));
    items.push({ key, caption: `a ${colour} ${shape}`, colour, shape, url: `${imageHost}/img/${key}.jpg`, nsfw });
  };
  for (const colour of Object.keys(TINY_COLOURS)) {
    for (const shape of TINY_SHAPES) {
      await add(colour, shape, 64, 'UNLIKELY');
      await add(colour, shape, 96, n % 7 === 0 ? 'NSFW' : 'UNLIKELY');
    }
  }
  // The same picture twice under two keys: near-duplicate removal must keep one.
  await add('cyan', 'square', 64, 'UNLIKELY', jpegs.get(items.find((i) => i.colour === 'cyan' && i.shape === 'square')!.key));
  const tar = join(dir, 'wds', '00000.tar');
  await mkdir(join(dir, 'wds'));
  const w = new TarWriter(createWriteStream(tar));
  for (const it of items) {
    await w.writeSample({ key: it.key, members: { jpg: jpegs.get(it.key)!, txt: it.caption, json: JSON.stringify({ url: it.url, NSFW: it.nsfw, key: it.key }) } });
  }
  await w.end();
  const emb = join(dir, 'emb');
  const indexFolder = join(dir, 'index');
  const inference = await runCli('embeddings-indices-hosting/run.ts', [
    'inference', '--input-dataset', tar, '--input-format', 'webdataset', '--output-folder', emb, '--clip-model', model, '--enable-metadata', '--batch-size', '16',
  ]);
  if (inference.code !== 0) throw new Error(`inference failed: ${inference.stderr.slice(-2000)}`);
  const index = await runCli('embeddings-indices-hosting/run.ts', ['index', '--embeddings-folder', emb, '--index-folder', indexFolder, '--index-key', 'Flat']);
  if (index.code !== 0) throw new Error(`index failed: ${index.stderr.slice(-2000)}`);
  return {
    dir,
    model,
    indexFolder,
    items,
    imageHost,
    jpegs,
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface RunningBack {
  url: string;
  stderr: () => string;
  stop(): Promise<void>;
}

/** Starts `run.ts back` on a free port over indices_paths.json written from `paths`. */
export async function startBack(fixture: Pick<BackFixture, 'dir'>, paths: Record<string, unknown>, extra: string[] = []): Promise<RunningBack> {
  const file = join(fixture.dir, `indices_paths-${Date.now()}.json`);
  await writeFile(file, JSON.stringify(paths));
  const { child, done } = startCli('embeddings-indices-hosting/run.ts', ['back', '--indices-paths', file, '--port', '0', ...extra]);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (): void => {
      const m = /listening on (http:\/\/\S+?)\/? /.exec(stderr);
      if (m) resolve(m[1]!);
    };
    child.stderr!.on('data', onData);
    void done.then((r) => reject(new Error(`back exited with ${r.code}: ${stderr.slice(-2000)}`)));
  });
  return {
    url,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM');
      await done;
    },
  };
}
