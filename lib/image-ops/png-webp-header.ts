// Sizes and alpha of a PNG or WebP read from its first chunks, for the files the addon's
// transformPngOrWebp decodes: asking libvips for the same header costs 0.2-0.4 ms per image.
// Anything the addon leaves to libvips (16-bit PNG, an ICC profile, EXIF with its orientation,
// animation, an odd layout) reads as null here, so the caller asks libvips.

export interface PngOrWebpHeader {
  format: 'png' | 'webp';
  width: number;
  height: number;
  hasAlpha: boolean;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function readPngOrWebpHeader(b: Buffer): PngOrWebpHeader | null {
  if (b.length >= 33 && b.subarray(0, 8).equals(PNG_SIGNATURE)) return readPng(b);
  if (b.length >= 30 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') return readWebp(b);
  return null;
}

function readPng(b: Buffer): PngOrWebpHeader | null {
  if (b.readUInt32BE(8) !== 13 || b.toString('latin1', 12, 16) !== 'IHDR') return null;
  const width = b.readUInt32BE(16);
  const height = b.readUInt32BE(20);
  const bitDepth = b[24]!;
  const colourType = b[25]!;
  if (width === 0 || height === 0 || bitDepth > 8) return null;
  let hasAlpha = colourType === 4 || colourType === 6;
  // Chunks before the image data say whether there is transparency, a profile or EXIF.
  for (let at = 33; at + 8 <= b.length; ) {
    const length = b.readUInt32BE(at);
    const type = b.toString('latin1', at + 4, at + 8);
    if (type === 'IDAT') return { format: 'png', width, height, hasAlpha };
    if (type === 'iCCP' || type === 'eXIf') return null;
    if (type === 'tRNS') hasAlpha = true;
    at += 12 + length;
  }
  return null;
}

function readWebp(b: Buffer): PngOrWebpHeader | null {
  const chunk = b.toString('latin1', 12, 16);
  if (chunk === 'VP8 ') {
    // Lossy: a key frame's start code, then 14-bit sizes (the top 2 bits are the upscaling hint).
    if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) return null;
    return { format: 'webp', width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff, hasAlpha: false };
  }
  if (chunk === 'VP8L') {
    // Lossless: signature 0x2f, then width-1 (14 bits), height-1 (14 bits), alpha hint (1 bit).
    if (b[20] !== 0x2f) return null;
    const bits = b.readUInt32LE(21);
    return { format: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, hasAlpha: ((bits >>> 28) & 1) === 1 };
  }
  if (chunk === 'VP8X') {
    const flags = b[20]!;
    // ICC profile 0x20, EXIF 0x08, animation 0x02.
    if ((flags & 0x2a) !== 0) return null;
    return { format: 'webp', width: b.readUIntLE(24, 3) + 1, height: b.readUIntLE(27, 3) + 1, hasAlpha: (flags & 0x10) !== 0 };
  }
  return null;
}
