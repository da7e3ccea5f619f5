// Both download stages against a server no one here wrote: Python's stdlib http.server, which
// answers HTTP/1.0 and ends every response by closing the connection (the server behind the
// undici#5360 crash), serving a nested listing of CSVs and a folder of images.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { Rng } from '../lib/random.ts';
import { readTarSamples } from '../lib/webdataset/tar-reader.ts';
import { REPO_ROOT, runCli } from './helpers/cli-process.ts';

const PYTHON = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['--version']).status === 0);
const REAL_IMAGES = join(REPO_ROOT, '..', 'shared', 'data', 'img2dataset-tests', 'resize_test_image');
const CAPTIONS = join(REPO_ROOT, '..', 'shared', 'data', 'img2dataset-tests', 'test_files', 'captions_10000.jsonl');

/** `python3 -m http.server` on a free port, serving `root`; resolves once it listens. */
async function startPythonServer(root: string): Promise<{ origin: string; child: ChildProcess }> {
  const child = spawn(PYTHON!, ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory', root], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr!.resume(); // its access log
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`http.server exited with ${code}: ${out}`)));
  });
  child.stdout!.resume();
  return { origin: `http://127.0.0.1:${port}`, child };
}

describe('Python http.server', { skip: PYTHON ? false : 'no python3 on this machine' }, () => {
  let root: string;
  let out: string;
  let server: { origin: string; child: ChildProcess };
  const csvs = new Map<string, Buffer>();
  const images = new Map<string, Buffer>();

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'py-http-'));
    out = await mkdtemp(join(tmpdir(), 'py-http-out-'));
    // 24 CSVs of 0.5-3 MB in nested folders, rows of real LAION captions where the data is here.
    const captions = existsSync(CAPTIONS)
      ? (await readFile(CAPTIONS, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as string)
      : Array.from({ length: 1000 }, (_, i) => `a generated caption number ${i}`);
    const rng = new Rng(11);
    for (let i = 0; i < 24; i++) {
      const path = `cah/part-${i % 3}/${i % 2 ? 'sub/' : ''}crawl_${String(i).padStart(2, '0')}.csv`;
      const target = 500_000 + Math.floor((i / 23) * 2_500_000);
      const lines = ['URL,TEXT,WIDTH,HEIGHT,LICENSE,NSFW,similarity'];
      let size = lines[0]!.length + 1;
      for (let r = 0; size < target; r++) {
        const caption = captions[rng.int(0, captions.length - 1)]!.replace(/"/g, '""');
        const line = `https://example.com/${i}/${r}.jpg,"${caption}",${rng.int(64, 2048)},${rng.int(64, 2048)},?,UNLIKELY,0.${rng.int(280, 400)}`;
        lines.push(line);
        size += Buffer.byteLength(line) + 1;
      }
      const body = Buffer.from(lines.join('\n') + '\n');
      csvs.set(path, body);
      await mkdir(join(root, path, '..'), { recursive: true });
      await writeFile(join(root, path), body);
    }
    // Images: img2dataset's own test photographs, plus generated ones in the other encodings.
    await mkdir(join(root, 'images'), { recursive: true });
    if (existsSync(REAL_IMAGES)) {
      for (const name of await readdir(REAL_IMAGES)) images.set(name, await readFile(join(REAL_IMAGES, name)));
    }
    for (let i = 0; i < 12; i++) {
      const w = 40 + i * 37;
      const h = 300 - i * 17;
      const pixels = Buffer.alloc(w * h * 3);
      for (let p = 0; p < pixels.length; p++) pixels[p] = (p * (i + 3) + (p % w)) & 0xff;
      const img = sharp(pixels, { raw: { width: w, height: h, channels: 3 } });
      const [ext, bytes] = i % 3 === 0 ? ['png', await img.png().toBuffer()] : i % 3 === 1 ? ['webp', await img.webp().toBuffer()] : ['jpg', await img.jpeg({ progressive: i % 2 === 0 }).toBuffer()];
      images.set(`gen_${i}.${ext}`, bytes);
    }
    for (const [name, bytes] of images) await writeFile(join(root, 'images', name), bytes);
    server = await startPythonServer(root);
  });
  after(async () => {
    server?.child.kill();
    await rm(root, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  });

  test('download_csv, --parallel 16: every one of the 24 CSVs byte-identical, exit 0', async () => {
    const dest = join(out, 'csv');
    const r = await runCli('download_csv/run.ts', ['--url', `${server.origin}/cah/`, '--output-folder', dest, '--parallel', '16', '--allow-private-addresses']);
    assert.equal(r.code, 0, r.stderr);
    for (const [path, body] of csvs) {
      const got = await readFile(join(dest, path.slice('cah/'.length)));
      assert.ok(got.equals(body), `${path}: ${got.length} bytes, want ${body.length}`);
    }
    const manifest = (await readFile(join(dest, '_manifest.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { status: string });
    assert.equal(manifest.length, 24);
    assert.ok(manifest.every((m) => m.status === 'downloaded'), JSON.stringify(manifest));
  });

  test('download_images over its image folder: every image a success', async () => {
    const list = join(out, 'urls.txt');
    await writeFile(list, [...images.keys()].map((n) => `${server.origin}/images/${n}`).join('\n') + '\n');
    const dest = join(out, 'img');
    const r = await runCli('download_images/run.ts', [
      '--url_list', list, '--input_format', 'txt', '--output_folder', dest, '--output_format', 'webdataset',
      '--image_size', '64', '--processes_count', '1', '--thread_count', '8', '--number_sample_per_shard', '100',
      '--timeout', '10', '--allow-private-addresses', 'True',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const stats = JSON.parse(await readFile(join(dest, '00000_stats.json'), 'utf8')) as { count: number; successes: number; status_dict: Record<string, number> };
    assert.equal(stats.count, images.size);
    assert.equal(stats.successes, images.size, JSON.stringify(stats.status_dict));
    let n = 0;
    for await (const s of readTarSamples(join(dest, '00000.tar'))) {
      assert.equal(s.members.get('jpg')!.subarray(0, 2).toString('hex'), 'ffd8');
      n++;
    }
    assert.equal(n, images.size);
  });
});
