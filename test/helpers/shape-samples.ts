// Samples for the inference tests: coloured circles and squares on white whose captions name the
// colour and the shape, which the tiny generated CLIP model (demo/tiny-clip.ts) maps together.
import { createWriteStream } from 'node:fs';
import sharp from 'sharp';
import { TINY_COLOURS } from '../../demo/tiny-clip.ts';
import { TarWriter } from '../../lib/webdataset/tar-writer.ts';

export const COLOURS = ['red', 'green', 'blue', 'yellow', 'black', 'magenta'] as const;
export const SHAPES = ['circle', 'square'] as const;

export interface ShapeItem {
  key: string;
  caption: string;
  colour: string;
  jpg: Buffer;
  json: Record<string, unknown>;
}

export async function shapeJpeg(colour: string, shape: string, w: number, h: number): Promise<Buffer> {
  const [r, g, b] = TINY_COLOURS[colour]!.map((v) => Math.round(v * 255));
  const fill = `rgb(${r},${g},${b})`;
  const s = Math.min(w, h);
  const body = shape === 'circle' ? `<circle cx="${w / 2}" cy="${h / 2}" r="${s * 0.4}" fill="${fill}"/>` : `<rect x="${(w - s * 0.8) / 2}" y="${(h - s * 0.8) / 2}" width="${s * 0.8}" height="${s * 0.8}" fill="${fill}"/>`;
  const svg = `<svg width="${w}" height="${h}" xmlns="http://www.w3.org/2000/svg"><rect width="${w}" height="${h}" fill="white"/>${body}</svg>`;
  return sharp(Buffer.from(svg)).jpeg({ quality: 90 }).toBuffer();
}

/** One item per colour and shape (12), keys 000000000 up, sizes varying a little. */
export async function shapeItems(): Promise<ShapeItem[]> {
  const items: ShapeItem[] = [];
  let n = 0;
  for (const colour of COLOURS) {
    for (const shape of SHAPES) {
      const key = String(n).padStart(9, '0');
      const [w, h] = [48 + (n % 5) * 9, 40 + (n % 3) * 13];
      items.push({ key, caption: `a ${colour} ${shape}`, colour, jpg: await shapeJpeg(colour, shape, w, h), json: { url: `http://example.com/${key}.jpg`, key, status: 'success', width: w, height: h, score: n / 4 } });
      n++;
    }
  }
  return items;
}

export async function writeTar(path: string, samples: Array<{ key: string; members: Record<string, Buffer | string> }>): Promise<void> {
  const w = new TarWriter(createWriteStream(path));
  for (const s of samples) await w.writeSample(s);
  await w.end();
}

export const wdsMembers = (it: ShapeItem): Record<string, Buffer | string> => ({ jpg: it.jpg, txt: it.caption, json: JSON.stringify(it.json) });
