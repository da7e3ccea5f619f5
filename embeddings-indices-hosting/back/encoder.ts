// The CLIP model of an index, as the back end uses it: one text or one image in, one L2-normalised
// float32 query vector out. Built on inference/'s model folder loader, tokenizer and native
// preprocessing, so a query is embedded exactly as the indexed samples were.
import { locateModelFiles, normalizeRows, openImageTower, openTextTower, type ImageTower, type ModelDtype, type TextTower } from '../inference/clip-model.ts';
import { ImagePreprocessor, readPreprocessorConfig } from '../inference/preprocess.ts';
import { ClipTokenizer } from '../inference/tokenizer.ts';
import type { Metrics } from './metrics.ts';

/** An image that does not decode: the client's fault (HTTP 400). */
export class ImageDecodeError extends Error {}

export class QueryEncoder {
  private constructor(
    readonly dir: string,
    readonly dim: number,
    private readonly text: TextTower,
    private readonly tokenizer: ClipTokenizer,
    private readonly image: ImageTower,
    private readonly preprocessor: ImagePreprocessor,
  ) {}

  static async open(dir: string, threads: number, dtype: ModelDtype = 'fp32'): Promise<QueryEncoder> {
    const files = locateModelFiles(dir, { image: true, text: true }, dtype);
    const session = { device: 'cpu' as const, intraOpThreads: threads };
    const preprocessing = readPreprocessorConfig(files.preprocessorConfig);
    const image = await openImageTower(files.vision, preprocessing.size, session);
    const text = await openTextTower(files.text, session);
    if (image.dim !== text.dim) throw new Error(`${dir}: the image tower gives ${image.dim} dimensions and the text tower ${text.dim}`);
    return new QueryEncoder(dir, image.dim, text, ClipTokenizer.fromModelFiles(files), image, new ImagePreprocessor(preprocessing));
  }

  async encodeText(text: string, metrics: Metrics): Promise<Float32Array> {
    const batch = await metrics.time('text_prepro_time', () => this.tokenizer.encodeBatch([text]));
    const out = await metrics.time('text_clip_inference_time', () => this.text.run(batch.ids, batch.mask, 1));
    return normalizeRows(Float32Array.from(out), 1, this.dim);
  }

  async encodeImage(bytes: Buffer, metrics: Metrics): Promise<Float32Array> {
    const size = this.image.size;
    const pixels = new Float32Array(3 * size * size);
    await metrics.time('image_prepro_time', async () => {
      try {
        await this.preprocessor.run(bytes, pixels);
      } catch (err) {
        throw new ImageDecodeError(`the image does not decode (${(err as Error).message.split('\n')[0]})`);
      }
    });
    const out = await metrics.time('image_clip_inference_time', () => this.image.run(pixels, 1));
    return normalizeRows(Float32Array.from(out), 1, this.dim);
  }
}
