import assert from 'node:assert/strict';
import { test } from 'node:test';
import sharp from 'sharp';
import { extractExif, pyFloatRepr, readExifTags } from '../download_images/exif.ts';

type Entry = [tag: number, type: number, values: number[] | string | Buffer];

/** A TIFF block: IFD0 entries, with ExifOffset / GPSInfo pointing at the given sub-IFDs. */
export function buildTiff(little: boolean, ifd0: Entry[], exif: Entry[] = [], gps: Entry[] = []): Buffer {
  const typeLen = [0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4];
  const chunks: Buffer[] = [];
  let size = 8;
  const u16 = (v: number) => { const b = Buffer.alloc(2); little ? b.writeUInt16LE(v) : b.writeUInt16BE(v); return b; };
  const u32 = (v: number) => { const b = Buffer.alloc(4); little ? b.writeUInt32LE(v >>> 0) : b.writeUInt32BE(v >>> 0); return b; };
  const encode = (type: number, values: Entry[2]): Buffer => {
    if (typeof values === 'string') return Buffer.from(values + '\0', 'utf8');
    if (Buffer.isBuffer(values)) return values;
    const parts: Buffer[] = [];
    for (const v of values) {
      const b = Buffer.alloc(typeLen[type]);
      if (type === 1 || type === 7) b.writeUInt8(v);
      else if (type === 3) little ? b.writeUInt16LE(v) : b.writeUInt16BE(v);
      else if (type === 4) little ? b.writeUInt32LE(v) : b.writeUInt32BE(v);
      else if (type === 9 || type === 10) little ? b.writeInt32LE(v) : b.writeInt32BE(v);
      else if (type === 12) little ? b.writeDoubleLE(v) : b.writeDoubleBE(v);
      parts.push(b);
    }
    // Rationals are given as [num, den, num, den, ...] of 4-byte halves.
    if (type === 5 || type === 10) return Buffer.concat(values.map((v) => (type === 10 ? (() => { const b = Buffer.alloc(4); little ? b.writeInt32LE(v) : b.writeInt32BE(v); return b; })() : u32(v))));
    return Buffer.concat(parts);
  };
  const count = (type: number, values: Entry[2]) => (typeof values === 'string' ? Buffer.byteLength(values) + 1 : Buffer.isBuffer(values) ? values.length : type === 5 || type === 10 ? values.length / 2 : values.length);
  const layout = (entries: Entry[], at: number): { ifd: Buffer; data: Buffer } => {
    let dataAt = at + 2 + entries.length * 12 + 4;
    const data: Buffer[] = [];
    const rows = entries.map(([tag, type, values]) => {
      const bytes = encode(type, values);
      let field: Buffer;
      if (bytes.length <= 4) field = Buffer.concat([bytes, Buffer.alloc(4 - bytes.length)]);
      else {
        field = u32(dataAt);
        data.push(bytes);
        dataAt += bytes.length;
      }
      return Buffer.concat([u16(tag), u16(type), u32(count(type, values)), field]);
    });
    return { ifd: Buffer.concat([u16(entries.length), ...rows, u32(0)]), data: Buffer.concat(data) };
  };
  // Sub-IFDs go first so IFD0 can point at them.
  const header = Buffer.concat([Buffer.from(little ? 'II' : 'MM'), u16(42)]);
  const subs: Buffer[] = [];
  const place = (entries: Entry[]): number => {
    const at = size;
    const { ifd, data } = layout(entries, at);
    subs.push(ifd, data);
    size += ifd.length + data.length;
    return at;
  };
  const full = [...ifd0];
  if (exif.length) full.push([0x8769, 4, [place(exif)]]);
  if (gps.length) full.push([0x8825, 4, [place(gps)]]);
  const ifd0At = size;
  const { ifd, data } = layout(full, ifd0At);
  chunks.push(header, u32(ifd0At), ...subs, ifd, data);
  return Buffer.concat(chunks);
}

/** A JPEG-shaped file: SOI, JFIF APP0, Exif APP1, then (fake) scan data. */
export function jpegWithExif(tiff: Buffer): Buffer {
  const app0 = Buffer.from([0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]);
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(payload.length + 2);
  return Buffer.concat([Buffer.from([0xff, 0xd8]), app0, Buffer.from([0xff, 0xe1]), len, payload, Buffer.from([0xff, 0xdb, 0x00, 0x43]), Buffer.alloc(64), Buffer.from([0xff, 0xd9])]);
}

const CAMERA: Parameters<typeof buildTiff> = [
  true,
  [
    [0x010f, 2, 'Canon'],
    [0x0110, 2, 'EOS 5D'],
    [0x0112, 3, [6]],
    [0x011a, 5, [72, 1]],
    [0x011b, 5, [300, 4]],
    [0x0128, 3, [2]],
    [0x013b, 2, 'Zoë "Q"'],
    [0xabcd, 3, [7]],
  ],
  [
    [0x829a, 5, [1, 250]],
    [0x829d, 5, [28, 10]],
    [0x9003, 2, '2020:01:02 03:04:05'],
    [0x9204, 10, [-2, 6]],
    [0x9209, 3, [16]],
    [0x9000, 7, Buffer.from('0231')],
    [0x9286, 7, Buffer.from('ASCII\0\0\0hello')],
    [0x927c, 7, Buffer.alloc(40, 1)],
    [0xabce, 12, [0.1]],
  ],
  [
    [0x0001, 2, 'N'],
    [0x0002, 5, [51, 1, 30, 1, 2637, 100]],
    [0x0000, 1, [2, 2, 0, 0]],
  ],
];

// What exifread 3.0 (exifread-nocycle 3.0.1) + json.dumps give for CAMERA, checked against Python.
const CAMERA_EXPECTED =
  '{"Image Make": "Canon", "Image Model": "EOS 5D", "Image Orientation": "Rotated 90 CW", "Image XResolution": "72", ' +
  '"Image YResolution": "75", "Image ResolutionUnit": "Pixels/Inch", "Image Artist": "Zo\\u00eb \\"Q\\"", "Image Tag 0xABCD": "7", ' +
  '"Image ExifOffset": "8", "GPS GPSLatitudeRef": "N", "GPS GPSLatitude": "[51, 30, 2637/100]", "GPS GPSVersionID": "[0, 0, 0, 0]", ' +
  '"Image GPSInfo": "227", "EXIF ExposureTime": "1/250", "EXIF FNumber": "14/5", "EXIF DateTimeOriginal": "2020:01:02 03:04:05", ' +
  '"EXIF ExposureBiasValue": "-1/3", "EXIF Flash": "Flash did not fire, compulsory flash mode", "EXIF ExifVersion": "", "EXIF Tag 0xABCE": "(0.1,)"}';

test('EXIF tags print as exifread does, in its order, with Python JSON escaping', async () => {
  const tiff = buildTiff(...CAMERA);
  assert.equal(await extractExif(jpegWithExif(tiff)), CAMERA_EXPECTED);
  // Big-endian TIFF gives the same tags.
  const big = buildTiff(false, ...(CAMERA.slice(1) as [Entry[], Entry[], Entry[]]));
  assert.equal(await extractExif(jpegWithExif(big)), CAMERA_EXPECTED);
  // A bare TIFF file is read from offset 0.
  assert.equal(readExifTags(tiff).get('Image Orientation'), 'Rotated 90 CW');
});

test('no EXIF gives "{}", and a broken block throws (img2dataset stores null)', async () => {
  const plain = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).jpeg().toBuffer();
  assert.equal(await extractExif(plain), '{}');
  const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).withExif({ IFD0: { Make: 'x' } }).png().toBuffer();
  assert.equal(await extractExif(png), '{}', 'exifread 3.0 does not read PNG');
  assert.equal(await extractExif(Buffer.from('GIF89a')), '{}');
  const jpeg = jpegWithExif(buildTiff(...CAMERA));
  // Cut after the IFD list: exifread reads zeros past the end and finds nothing.
  assert.equal(await extractExif(Buffer.from(jpeg.subarray(0, 208))), '{}');
  // Cut inside the first-IFD offset: a 4-byte read comes back with 2 bytes, which makes exifread raise.
  await assert.rejects(extractExif(Buffer.from(jpeg.subarray(0, 36))));
  // An unknown byte-order mark raises too.
  const bad = Buffer.from(jpeg);
  bad[2 + 18 + 10] = 0x58;
  await assert.rejects(extractExif(bad));
});

test('sharp-written EXIF (JPEG and WebP) reads like exifread', async () => {
  const img = sharp({ create: { width: 16, height: 8, channels: 3, background: '#336699' } }).withExif({ IFD0: { Make: 'cah-demo', Model: 'X1' } });
  const jpeg = await img.clone().jpeg().toBuffer();
  const tags = JSON.parse(await extractExif(jpeg)) as Record<string, string>;
  assert.equal(tags['Image Make'], 'cah-demo');
  assert.equal(tags['Image Model'], 'X1');
  assert.equal(tags['EXIF ExifImageWidth'], '16');
  // libwebp stores "Exif\0\0" before the TIFF header, which exifread cannot take: it raises.
  await assert.rejects(extractExif(await img.clone().webp().toBuffer()));
});

test('floats print with Python repr', () => {
  assert.equal(pyFloatRepr(0.1), '0.1');
  assert.equal(pyFloatRepr(1), '1.0');
  assert.equal(pyFloatRepr(1e-5), '1e-05');
  assert.equal(pyFloatRepr(0.0001), '0.0001');
  assert.equal(pyFloatRepr(1e16), '1e+16');
  assert.equal(pyFloatRepr(123456789012345.6), '123456789012345.6');
  assert.equal(pyFloatRepr(-2.5e-7), '-2.5e-07');
  assert.equal(pyFloatRepr(Math.fround(0.1)), '0.10000000149011612');
});
