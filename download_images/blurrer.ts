// img2dataset's bounding-box blur (reference img2dataset.md section 3, "Bounding-box blurring"):
// a soft mask over the grown boxes, a Gaussian blur of fixed size k with OpenCV's sigma for k,
// and img * (1 - m) + blurred * m, truncated to 8 bits. Works in place on interleaved 8-bit pixels.

/** OpenCV's fixed kernels for sigma <= 0 and k <= 7 (getGaussianKernel). */
const SMALL_KERNELS: Record<number, number[]> = {
  1: [1],
  3: [0.25, 0.5, 0.25],
  5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
  7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
};

export function gaussianKernel(k: number): Float64Array {
  const small = SMALL_KERNELS[k];
  if (small) return Float64Array.from(small);
  const sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8;
  const out = new Float64Array(k);
  let sum = 0;
  for (let i = 0; i < k; i++) {
    const x = i - (k - 1) / 2;
    out[i] = Math.exp(-(x * x) / (2 * sigma * sigma));
    sum += out[i];
  }
  for (let i = 0; i < k; i++) out[i] /= sum;
  return out;
}

/** OpenCV's default border (BORDER_REFLECT_101: dcb|abcd|cba). */
function reflect101(i: number, n: number): number {
  if (n === 1) return 0;
  while (i < 0 || i >= n) {
    if (i < 0) i = -i;
    if (i >= n) i = 2 * n - 2 - i;
  }
  return i;
}

/** Separable blur of `channels` interleaved float planes, returning a new array. */
function blurPlanes(src: Float32Array, width: number, height: number, channels: number, kernel: Float64Array): Float32Array {
  const r = (kernel.length - 1) / 2;
  const tmp = new Float32Array(src.length);
  const out = new Float32Array(src.length);
  const xs = new Int32Array(width + 2 * r);
  for (let i = 0; i < xs.length; i++) xs[i] = reflect101(i - r, width);
  const ys = new Int32Array(height + 2 * r);
  for (let i = 0; i < ys.length; i++) ys[i] = reflect101(i - r, height);
  for (let y = 0; y < height; y++) {
    const row = y * width * channels;
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        let s = 0;
        for (let t = 0; t < kernel.length; t++) s += kernel[t] * src[row + xs[x + t] * channels + c];
        tmp[row + x * channels + c] = s;
      }
    }
  }
  const stride = width * channels;
  for (let y = 0; y < height; y++) {
    for (let i = 0; i < stride; i++) {
      let s = 0;
      for (let t = 0; t < kernel.length; t++) s += kernel[t] * tmp[ys[y + t] * stride + i];
      out[y * stride + i] = s;
    }
  }
  return out;
}

/**
 * Blurs the relative boxes `[x_min, y_min, x_max, y_max]` of an 8-bit interleaved image in place.
 * Returns false (and leaves the pixels alone) when there is nothing to blur.
 */
export function blurBoxes(pixels: Uint8Array, width: number, height: number, channels: number, boxes: readonly (readonly number[])[]): boolean {
  if (boxes.length === 0) return false;
  const mask = new Float32Array(width * height);
  let maxDiagonal = 0;
  const clip = (v: number, hi: number): number => Math.min(Math.max(v, 0), hi);
  for (const box of boxes) {
    let x1 = Math.trunc(box[0] * width);
    let y1 = Math.trunc(box[1] * height);
    let x2 = Math.trunc(box[2] * width);
    let y2 = Math.trunc(box[3] * height);
    // Not a true diagonal: the longer side, as in the ImageNet face-obfuscation code img2dataset follows.
    const diagonal = Math.max(x2 - x1, y2 - y1);
    maxDiagonal = Math.max(maxDiagonal, diagonal);
    x1 = clip(Math.trunc(x1 - 0.1 * diagonal), width - 1);
    y1 = clip(Math.trunc(y1 - 0.1 * diagonal), height - 1);
    x2 = clip(Math.trunc(x2 + 0.1 * diagonal), width - 1);
    y2 = clip(Math.trunc(y2 + 0.1 * diagonal), height - 1);
    for (let y = y1; y < y2; y++) mask.fill(1, y * width + x1, y * width + Math.max(x1, x2));
  }
  let k = Math.max(3, Math.trunc(2 * Math.ceil(0.1 * maxDiagonal) + 1));
  if (k % 2 === 0) k += 1;
  const kernel = gaussianKernel(k);
  const img = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) img[i] = pixels[i] / 255;
  const blurred = blurPlanes(img, width, height, channels, kernel);
  const softMask = blurPlanes(mask, width, height, 1, kernel);
  for (let p = 0; p < width * height; p++) {
    const m = softMask[p];
    for (let c = 0; c < channels; c++) {
      const i = p * channels + c;
      // float32 steps, as numpy does them, so the truncation lands on the same integers.
      const f = Math.fround;
      const v = f(f(f(img[i] * f(1 - m)) + f(blurred[i] * m)) * 255);
      pixels[i] = v <= 0 ? 0 : v >= 255 ? 255 : Math.trunc(v);
    }
  }
  return true;
}
